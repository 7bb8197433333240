"""A bounded (bytes) LRU cache of RNN states, keyed by token-id prefixes.

An RNN's whole history is its state: a few kilobytes, whatever the prefix's length. Keep the
state after recent prefixes and a request that extends one (a user typing one character at a
time, an n-best list whose context an earlier list had) starts from it instead of from ``<bos>``::

    key (a whole prefix, <bos> included)     value (a function of the key alone)
    <bos> 厨 房 里                  ──▶      state after 里 (L, S), log P(厨|<bos>), log P(房|…), log P(里|…)

Keys are full token prefixes and values depend on nothing but the key (the state after it and
the log-probs of its own tokens), so a request can only ever reuse what its own tokens imply:
another request's text never comes back through the cache. The keys live in a trie, so the
longest cached prefix of every node of a prefix tree is found in one pass over the tree.

What values cannot show, time can: a request whose prefix is cached is answered sooner (a
9,000-character prefix: seconds fresh, a fraction of a second cached), so a client able to time
requests could tell whether some prefix was asked for recently. Entries therefore live in
*scopes*: each key is a (scope, prefix) pair, and a request reads and fills only its own scope's
entries. The service gives each tenant (API key) its own scope, narrowed further by a request's
``cache_salt`` (as vLLM's), so the timing tells a client only about its own scope's requests::

    scope_key(tenant, salt) ─▶ root of that scope's trie ─▶ <bos> ─▶ 厨 ─▶ 房 …

A scope comes with a call (``Engine.score(..., cache_scope=...)``) or from the calling context
(:func:`cache_scope`, :func:`enter_scope`: the service sets it once per request). Scopes share the
byte bound: one scope's traffic can evict another's entries (its own requests then get slower,
never another's faster).

The cache belongs to one model (:meth:`PrefixStateCache.bind` refuses another) and to one thread
(the engine's worker): it takes no lock. ``max_bytes`` bounds the tensors it holds plus
``NODE_BYTES`` for each node of its trie; past it, the least recently used entries go.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from torch import Tensor

NODE_BYTES = 256  # what one trie node costs in Python objects (an estimate, on the high side)
MAX_STORE_PER_PASS = 64  # prefixes one scoring pass may add (the rest of a big pass is not kept)


# -- scopes --------------------------------------------------------------------------------------------
def scope_key(*parts: str) -> bytes:
    """A scope's key: a 16-byte digest of its parts (e.g. a tenant and a salt), whatever their size.
    ``scope_key()`` (no parts) is the default scope, the one every request shares without a tenant."""
    digest = hashlib.blake2b(digest_size=16, person=b"rnnlm-cache")
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)  # lengths first: ("ab", "") != ("a", "b")
    return digest.digest()


DEFAULT_SCOPE = scope_key()
_SCOPE: ContextVar[Hashable] = ContextVar("rnnlm_prefix_cache_scope", default=DEFAULT_SCOPE)


def current_scope() -> Hashable:
    """The scope of the calling context (:data:`DEFAULT_SCOPE` unless one was entered)."""
    return _SCOPE.get()


def enter_scope(scope: Hashable) -> None:
    """Use ``scope`` for the rest of the current context (an asyncio task: one request)."""
    _SCOPE.set(scope)


@contextlib.contextmanager
def cache_scope(scope: Hashable) -> Iterator[None]:
    """Use ``scope`` inside the block."""
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


@dataclass(frozen=True)
class CachedPrefix:
    """What the model computes from a prefix ``key`` alone."""

    state: Tensor  # (L, S): the model's state after the key's last token
    logprobs: Tensor  # (len(key) - 1,): log P(key[i] | key[:i]) for i >= 1, as the pass computed them

    @property
    def length(self) -> int:
        """len(key)."""
        return self.logprobs.numel() + 1

    @property
    def nbytes(self) -> int:
        return (
            self.state.numel() * self.state.element_size()
            + self.logprobs.numel() * self.logprobs.element_size()
        )


class _Node:
    """One prefix in the trie: its children by next token, and its entry if it is cached."""

    __slots__ = ("children", "entry", "parent", "scope", "token")

    def __init__(self, parent: _Node | None, token: int) -> None:
        self.children: dict[int, _Node] = {}
        self.entry: CachedPrefix | None = None
        self.parent = parent
        self.token = token
        self.scope: Hashable = None  # a scope's root: the scope it holds


@dataclass
class CacheStats:
    hits: int = 0  # sequences and queries that started from a cached prefix
    misses: int = 0  # those that found none
    evictions: int = 0  # entries dropped to keep the byte bound
    stored: int = 0  # entries added


class PrefixStateCache:
    """LRU of :class:`CachedPrefix` by (scope, token prefix), within ``max_bytes``."""

    def __init__(self, max_bytes: int, max_store_per_pass: int = MAX_STORE_PER_PASS) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if max_store_per_pass < 0:
            raise ValueError("max_store_per_pass must be >= 0")
        self.max_bytes = max_bytes
        self.max_store_per_pass = max_store_per_pass
        self.stats = CacheStats()
        self._roots: dict[Hashable, _Node] = {}  # one trie per scope
        self._lru: OrderedDict[_Node, None] = OrderedDict()  # cached nodes, least recently used first
        self._tensor_bytes = 0
        self._nodes = 0  # trie nodes, the scopes' roots included
        self._model: object | None = None

    # -- size ------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """What the cache holds, as it counts against ``max_bytes``."""
        return self._tensor_bytes + NODE_BYTES * self._nodes

    def __len__(self) -> int:
        return len(self._lru)

    def bind(self, model: object) -> None:
        """Tie the cache to one model: its states mean nothing to another."""
        if self._model is None:
            self._model = model
        elif self._model is not model:
            raise ValueError("this prefix-state cache holds another model's states")

    def clear(self) -> None:
        self._roots.clear()
        self._lru.clear()
        self._tensor_bytes = self._nodes = 0

    # -- reading ---------------------------------------------------------------------------------
    def get(self, key: Sequence[int], scope: Hashable = DEFAULT_SCOPE) -> CachedPrefix | None:
        """The entry of exactly ``key`` in ``scope`` (it becomes the most recently used), or None."""
        node: _Node | None = self._roots.get(scope)
        for tok in key:
            node = node.children.get(int(tok)) if node is not None else None
        if node is None or node.entry is None:
            return None
        self._lru.move_to_end(node)
        return node.entry

    def match_tree(
        self, parent: Sequence[int], token: Sequence[int], scopes: Sequence[Hashable] | None = None
    ) -> list[CachedPrefix | None]:
        """For each node of a prefix tree (flat lists, parents before children, -1 at the root),
        the cached entry of exactly its prefix in its scope (``scopes``, per node, read where the
        parent is the root; None: the default scope), or None. Found entries become the most
        recently used."""
        found: list[CachedPrefix | None] = [None] * len(token)
        if not self._lru:
            return found
        at: list[_Node | None] = [None] * len(token)
        roots = self._roots
        for v, (p, tok) in enumerate(zip(parent, token, strict=True)):
            base = roots.get(scopes[v] if scopes is not None else DEFAULT_SCOPE) if p < 0 else at[p]
            node = base.children.get(tok) if base is not None else None
            at[v] = node
            if node is not None and node.entry is not None:
                found[v] = node.entry
                self._lru.move_to_end(node)
        return found

    # -- writing ---------------------------------------------------------------------------------
    def put(
        self, key: Sequence[int], state: Tensor, logprobs: Tensor, scope: Hashable = DEFAULT_SCOPE
    ) -> bool:
        """Keep ``state`` (L, S) and ``logprobs`` (len(key) - 1,) for ``key`` in ``scope``; False
        when the entry alone would not fit in ``max_bytes``. Least recently used entries (of any
        scope) leave to make room."""
        if len(key) == 0:
            raise ValueError("a cached prefix needs at least its start token")
        if logprobs.numel() != len(key) - 1:
            raise ValueError(f"logprobs has {logprobs.numel()} values for a key of {len(key)} tokens")
        entry = CachedPrefix(state, logprobs)
        if entry.nbytes + NODE_BYTES * (len(key) + 1) > self.max_bytes:  # alone, with its path and root
            return False
        node = self._roots.get(scope)
        if node is None:
            node = self._roots[scope] = _Node(None, -1)
            node.scope = scope
            self._nodes += 1
        depth = 0
        for tok in key:  # the part of the key already in the trie
            child = node.children.get(int(tok))
            if child is None:
                break
            node, depth = child, depth + 1
        for tok in key[depth:]:
            child = _Node(node, int(tok))
            node.children[int(tok)] = child
            self._nodes += 1
            node = child
        if node.entry is not None:
            self._tensor_bytes -= node.entry.nbytes
        node.entry = entry
        self._tensor_bytes += entry.nbytes
        self._lru[node] = None
        self._lru.move_to_end(node)
        self.stats.stored += 1
        while self.nbytes > self.max_bytes:
            oldest = next(iter(self._lru))
            if oldest is node:  # only the new entry is left, and it was checked to fit
                break
            self._evict(oldest)
        return True

    def _evict(self, node: _Node) -> None:
        del self._lru[node]
        assert node.entry is not None
        self._tensor_bytes -= node.entry.nbytes
        node.entry = None
        self.stats.evictions += 1
        while node.parent is not None and node.entry is None and not node.children:  # prune the branch
            del node.parent.children[node.token]
            self._nodes -= 1
            node = node.parent
        if node.parent is None and not node.children:  # a scope with nothing left: its root goes too
            del self._roots[node.scope]
            self._nodes -= 1
