"""Prefix-shared scoring: every distinct prefix of a batch is computed once, and only once.

The candidates of an n-best list share most of their prefixes. A prefix tree over their token
ids, with each node one distinct prefix, shows the work an RNN really has to do: feed each
node's last token once, from its parent's state, and read the log-probs of its children's
tokens off that one output row::

    candidates                              prefix tree                      depth  0 1 2 3 4 5 6 7 8
    <bos> 厨 房 里 食 油 用 完 了 <eos>                     ┌─ 食 油 用 完 了    rows   1 1 1 1 3 3 3 3 3
    <bos> 厨 房 里 石 油 用 完 了 <eos>     <bos> 厨 房 里 ─┼─ 石 油 用 完 了
    <bos> 厨 房 里 的 油 用 完 了 <eos>                     └─ 的 油 用 完 了

    requested positions 3 × 10 = 30         computed positions 4 + 3 × 5 = 19    (the trie bound)

A node is *computed* when some sequence continues past it (its output predicts a child) or
when a query asks for the distribution after it; the leaves (normally ``<eos>``) are never fed.
The recurrent layers run layer by layer: first the input half of every gate for all computed
nodes at once (large matrix products), then one step per depth in which every node of that
depth, across all sequences of the batch, takes its parent's state and advances together. So a
batch costs as many sequential steps as its longest sequence, like a padded batch, but only the
trie bound in arithmetic. The output layer then runs chunk by chunk over the computed rows;
each chunk keeps only the target tokens' log-probs (gather − logsumexp), so no more than
``max_logits`` elements of tokens × vocabulary exist at once.

The cells are the network's own (:meth:`model.models.network.RNNLM.cell_step`), because a fused
sequence kernel can neither start each row from a different parent nor hand back the state of
an inner position; tests check them against ``lm.sequence_logprobs`` / ``lm.prefill`` within 1e-5.

With a prefix-state cache (:mod:`model.models.state_cache`, the engine's), a pass first looks every
node up in it: a cached node (a *seed*) is not computed, its children start from its cached state,
and the tokens on its path take their log-probs from its entry; the pass then keeps the states of
its queries, of the prefixes where candidates part, and of each candidate's last fed prefix
(``MAX_STORE_PER_PASS`` at most). A user typing one character at a time thus costs one position per
request. Seeds' output rows follow the computed rows; ``computed`` counts only the recurrent ones.

Entry point: :meth:`LanguageModel.score_tree <model.models.lm.LanguageModel.score_tree>` (sequence
log-probs, next-token distributions and, for generation prefill, states, all in one pass). The
RNN's is :func:`score_rnn_tree`; every other model uses :func:`score_each`, its own
``sequence_logprobs`` / ``prefill`` (no sharing, ``computed == requested``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from model.models.network import RNNLM
from model.models.state_cache import DEFAULT_SCOPE, CachedPrefix, PrefixStateCache

MAX_LOGITS = 1 << 22  # elements of one logits chunk (rows × vocabulary): 16 MiB of float32
PROJECT_ROWS = 2048  # rows per input-projection product (bounds its (rows, gates × H) buffer)
CHUNK_POSITIONS = 1024  # positions computed between two calls of a pass's ``should_stop``
STEP_POSITIONS = 32  # a depth step counts as at least this many positions (a narrow step costs its overhead)

StopCheck = Callable[[], bool]  # asked between chunks: True ends the pass (nobody waits for it)


# What a pass needs of its model, as protocols: model.models.lm's classes satisfy them and call
# into this module, which never imports them back.
class ScoringModel(Protocol):
    """Any model (a :class:`~model.models.lm.LanguageModel`): its own batched calls."""

    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]: ...
    def prefill(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, Any]: ...
    def concat_states(self, states: Sequence[Any]) -> Any: ...
    def score_tree(
        self, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
    ) -> TreeResult: ...


class TreeModel(Protocol):
    """A recurrent model (a :class:`~model.models.lm.RecurrentLanguageModel`): its network's
    cells run the tree, its output layer gives each chunk's logits."""

    @property
    def net(self) -> RNNLM: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def vocab_size(self) -> int: ...
    def tree_output(self, tree: PrefixTree, plan: Plan) -> Callable[[Tensor, int], Tensor]:
        """``output(features, first)``: the logits (c, V) of the pass's feature rows ``first ..
        first + c``."""
        ...


class PassStopped(RuntimeError):
    """A scoring pass ended early because its ``should_stop`` said so; its work is dropped."""


class _Checkpoints:
    """Calls ``should_stop`` once at least ``every`` positions were computed since the last call."""

    def __init__(self, should_stop: StopCheck | None, every: int) -> None:
        if every < 1:
            raise ValueError("chunk_positions must be >= 1")
        self.should_stop, self.every, self.done = should_stop, every, 0

    def advance(self, positions: int) -> None:
        if self.should_stop is None:
            return
        self.done += positions
        if self.done >= self.every:
            self.done = 0
            if self.should_stop():
                raise PassStopped("the pass was stopped between chunks")


# -- the tree -----------------------------------------------------------------------------------
@dataclass
class PrefixTree:
    """A trie over id sequences, as flat lists. Node ``v`` is one distinct prefix.

    Node ids grow in insertion order, so a parent always has a smaller id than its children.
    """

    parent: list[int] = field(default_factory=list)  # node -> parent node (-1 at depth 1)
    token: list[int] = field(default_factory=list)  # node -> the token it feeds to the model
    paths: list[list[int]] = field(default_factory=list)  # sequence -> node of s[:1], ..., s[:len]
    query_nodes: list[int] = field(default_factory=list)  # query -> node of the whole prefix
    scope: list[Hashable] = field(default_factory=list)  # node -> its prefix-cache scope

    @property
    def num_nodes(self) -> int:
        return len(self.token)

    def distinct_prefixes(self, seq_indices: Sequence[int]) -> int:
        """Positions to compute to score these sequences alone: their own trie bound."""
        return len({node for i in seq_indices for node in self.paths[i][:-1]})


def build_tree(
    seqs: Sequence[Sequence[int]],
    queries: Sequence[Sequence[int]] = (),
    share: bool = True,
    scopes: Sequence[Hashable] | None = None,
) -> PrefixTree:
    """Insert every sequence, then every query. ``share=False`` gives each sequence its own
    branch (the dense baseline, through the same code path). ``scopes`` (one per sequence, then
    one per query; None: all :data:`~model.models.state_cache.DEFAULT_SCOPE`) are the prefix-cache scopes:
    sequences of different scopes share no node, so one scope's work never shortens another's."""
    if scopes is not None and len(scopes) != len(seqs) + len(queries):
        raise ValueError(f"{len(scopes)} scopes for {len(seqs)} sequences and {len(queries)} queries")
    tree = PrefixTree()
    index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    roots: dict[tuple, int] = {}  # a branch's root (scope, or a dense sequence) -> its id, below -1
    parent_of, token_of, scope_of = tree.parent, tree.token, tree.scope

    def insert(seq: Sequence[int], root: tuple, scope: Hashable) -> list[int]:
        path, parent = [], roots.setdefault(root, -2 - len(roots))
        for tok in seq:
            node = index.get((parent, tok))
            if node is None:
                node = index[(parent, tok)] = len(token_of)
                parent_of.append(parent if parent >= 0 else -1)
                token_of.append(tok)
                scope_of.append(scope)
            path.append(node)
            parent = node
        return path

    scope_at = (lambda i: DEFAULT_SCOPE) if scopes is None else scopes.__getitem__
    for i, s in enumerate(seqs):
        scope = scope_at(i)
        tree.paths.append(insert(s, ("scope", scope) if share else ("dense", i), scope))
    for j, q in enumerate(queries):
        if len(q) == 0:
            raise ValueError("a query prefix needs at least its start token")
        scope = scope_at(len(seqs) + j)
        tree.query_nodes.append(insert(q, ("scope", scope), scope)[-1])
    return tree


# -- the plan: computed nodes, depth by depth ------------------------------------------------------
@dataclass
class Plan:
    """Which nodes run at each step: step ``d`` feeds every computed node of depth ``d`` at once.

    With a prefix-state cache, *seeds* are nodes whose state comes from the cache: they are not
    computed, their children start from their state at depth 0, and their feature rows follow
    the computed ones (rows ``num_rows + i``)."""

    tokens: list[list[int]]  # per depth, the token each of its nodes feeds
    parent_rows: list[list[int]]  # per depth, each node's parent's row in the previous depth
    row_of_node: list[int]  # node -> global feature row (-1: not computed)
    num_rows: int  # computed rows (the seeds' rows come after them)
    seeds: list[int] = field(default_factory=list)  # seed i -> node
    start_seeds: list[int] = field(default_factory=list)  # depth-0 row -> the seed it starts from (-1: zeros)


def plan_depths(tree: PrefixTree, computed: list[bool] | None = None, seeds: Sequence[int] = ()) -> Plan:
    """Group the computed nodes (by default those with a child, and the queries) by depth.
    ``seeds`` (nodes with a cached state, never computed) may be the parents of computed nodes."""
    n = tree.num_nodes
    parent = tree.parent
    if computed is None:
        computed = [False] * n
        for v in range(n):
            if parent[v] >= 0:
                computed[parent[v]] = True
        for q in tree.query_nodes:
            computed[q] = True
    seed_of = {v: i for i, v in enumerate(seeds)}
    tokens: list[list[int]] = []
    parent_rows: list[list[int]] = []
    start_seeds: list[int] = []
    depth_row = [(-1, -1)] * n
    for v in range(n):  # parents come before children
        if not computed[v]:
            continue
        p = parent[v]
        seed = seed_of.get(p, -1) if p >= 0 else -1
        d = depth_row[p][0] + 1 if p >= 0 and seed < 0 else 0
        if d == len(tokens):
            tokens.append([])
            parent_rows.append([])
        depth_row[v] = (d, len(tokens[d]))
        tokens[d].append(tree.token[v])
        parent_rows[d].append(depth_row[p][1] if d > 0 else -1)
        if d == 0:
            start_seeds.append(seed)
    offsets = [0]
    for level in tokens:
        offsets.append(offsets[-1] + len(level))
    row_of_node = [offsets[d] + r if d >= 0 else -1 for d, r in depth_row]
    for v, i in seed_of.items():
        row_of_node[v] = offsets[-1] + i
    return Plan(tokens, parent_rows, row_of_node, offsets[-1], list(seeds), start_seeds)


def run_tree(
    net: RNNLM,
    plan: Plan,
    state_rows: Sequence[int] = (),
    checkpoints: _Checkpoints | None = None,
    seed_states: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Features (N + S, D) of every computed node, in plan row order, then of the S seeds, and
    the state (L, Q, S) after each of ``state_rows``. ``seed_states`` (L, S, state width) are the
    seeds' cached states. ``checkpoints`` is told the rows of each depth as they are done, a
    depth counting as at least ``STEP_POSITIONS`` rows (it may end the pass with
    :class:`PassStopped` between two depths).

    Layer by layer: the input half of every gate for all nodes at once (big products), then one
    small product per depth for the hidden half, each node starting from its parent's row. A
    layer's weights are read once per depth, as a fused sequence kernel reads them once per step.
    """
    if net.training:
        raise ValueError("prefix-shared scoring needs the network in eval mode")
    device = net.embedding.weight.device
    n, hidden = plan.num_rows, net.config.hidden_dim
    tokens = torch.tensor([t for level in plan.tokens for t in level], dtype=torch.long, device=device)
    offsets = [0]
    for level in plan.tokens:
        offsets.append(offsets[-1] + len(level))
    parents = [
        torch.tensor(rows, dtype=torch.long, device=device) + offsets[d - 1] if d else None
        for d, rows in enumerate(plan.parent_rows)
    ]  # global row of each node's parent
    state_idx = torch.tensor(list(state_rows), dtype=torch.long, device=device)
    x = net.drop(net.embedding(tokens))  # (N, E)
    lstm = net.config.cell == "lstm"
    n_seeds = len(plan.seeds)
    if n_seeds and (seed_states is None or seed_states.size(1) != n_seeds):
        raise ValueError("the plan's seeds need their states")
    seeded = [r for r, s in enumerate(plan.start_seeds) if s >= 0]  # depth-0 rows that start from a seed
    seeded_rows = torch.tensor(seeded, dtype=torch.long, device=device)
    seeded_from = torch.tensor([plan.start_seeds[r] for r in seeded], dtype=torch.long, device=device)
    states = []
    for layer in range(net.config.num_layers):
        h_all = torch.empty(n + n_seeds, hidden, device=device, dtype=x.dtype)  # (N + S, H)
        c_all = torch.empty_like(h_all) if lstm else None
        if seed_states is not None and n_seeds:
            h_all[n:] = seed_states[layer, :, :hidden]
            if c_all is not None:
                c_all[n:] = seed_states[layer, :, hidden:]
        win_start = win_end = 0
        gi_win = x[:0]
        for d in range(len(plan.tokens)):
            a, b = offsets[d], offsets[d + 1]
            if b > win_end:  # project the next window of rows: at least PROJECT_ROWS, whole depths
                win_start, win_end = a, max(b, min(n, a + PROJECT_ROWS))
                gi_win = net.input_gates(layer, x[win_start:win_end])  # (W, G·H)
            gi = gi_win[a - win_start : b - win_start]
            if d == 0:  # the start state: zeros, or a seed's cached state
                h = torch.zeros(b - a, hidden, device=device, dtype=x.dtype)
                c = torch.zeros_like(h) if lstm else None
                if len(seeded):
                    h.index_copy_(0, seeded_rows, h_all[n:].index_select(0, seeded_from))
                    if c is not None and c_all is not None:
                        c.index_copy_(0, seeded_rows, c_all[n:].index_select(0, seeded_from))
            else:
                parent = parents[d]
                assert parent is not None
                h = h_all.index_select(0, parent)  # (B_d, H)
                c = c_all.index_select(0, parent) if c_all is not None else None
            h, c = net.cell_step(layer, gi, h, c)
            h_all[a:b] = h
            if c_all is not None and c is not None:
                c_all[a:b] = c
            if checkpoints is not None:
                checkpoints.advance(max(b - a, STEP_POSITIONS))
        if len(state_idx):
            parts = [h_all.index_select(0, state_idx)]
            if c_all is not None:
                parts.append(c_all.index_select(0, state_idx))
            states.append(torch.cat(parts, dim=-1))  # (Q, S)
        x = net.drop(h_all[:n]) if layer + 1 < net.config.num_layers else h_all
    feats = net.top_features(x)
    return feats, (torch.stack(states) if states else None)


@dataclass
class TreeResult:
    logprobs: list[Tensor]  # per sequence: log P(s[i] | s[:i]) for i >= 1, float64 on the CPU
    next_logprobs: Tensor | None  # (Q, V) log-probs after each query prefix, on the model's device
    states: Any  # the model's state after each query (L, Q, S), when asked for
    computed: int  # positions fed through the model
    requested: int  # positions a plain per-sequence run would feed (scored tokens + query tokens)
    tree: PrefixTree | None = None  # None for the fallback path


def requested_positions(seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = ()) -> int:
    return sum(max(len(s) - 1, 0) for s in seqs) + sum(len(q) for q in queries)


def score_tree(
    lm: ScoringModel, seqs: Sequence[Sequence[int]], queries: Sequence[Sequence[int]] = (), **options: Any
) -> TreeResult:
    """Score ``seqs`` and the ``queries``' next tokens (and states) in one pass: the model's own
    :meth:`~model.models.lm.LanguageModel.score_tree` (prefix-shared for an RNN, per sequence otherwise)."""
    return lm.score_tree(seqs, queries, **options)


@torch.inference_mode()
def score_rnn_tree(
    lm: TreeModel,
    seqs: Sequence[Sequence[int]],
    queries: Sequence[Sequence[int]] = (),
    *,
    with_state: bool = False,
    share: bool = True,
    max_logits: int = MAX_LOGITS,
    should_stop: StopCheck | None = None,
    chunk_positions: int = CHUNK_POSITIONS,
    cache: PrefixStateCache | None = None,
    scopes: Sequence[Hashable] | None = None,
) -> TreeResult:
    """Score ``seqs`` (each from its first token, as :meth:`LanguageModel.sequence_logprobs`)
    and, for each query prefix, the next-token log-probs (as ``next_token_logprobs``) and, with
    ``with_state``, the state after it (as ``prefill``), sharing every common prefix.

    With a ``cache`` (and ``share``), a branch of the tree starts from the deepest prefix the
    cache holds (its state, and its tokens' log-probs), and the pass leaves in the cache the
    states of the prefixes worth keeping (see :func:`_prefixes_to_keep`). Each sequence and query
    reads and fills only its own scope's entries (``scopes``: see :func:`build_tree`).

    The pass runs in chunks of about ``chunk_positions`` positions (whole depths of a layer, or
    output chunks); between two, ``should_stop()`` returning True ends it with
    :class:`PassStopped`, dropping its tensors. The checks change nothing in the arithmetic."""
    net, device = lm.net, lm.device
    checkpoints = _Checkpoints(should_stop, chunk_positions)
    tree = build_tree(seqs, queries, share, scopes)
    cache = cache if share else None  # a dense pass (sharing off) neither reads nor fills it
    use = _CacheUse.match(tree, cache, lm) if cache is not None else None  # None: no hit
    plan = plan_depths(tree, use.computed, use.seeds) if use is not None else plan_depths(tree)
    requested = requested_positions(seqs, queries)
    row_of_node = plan.row_of_node
    keep = _prefixes_to_keep(tree, row_of_node, plan.num_rows, cache)

    # 1. The recurrent layers, depth by depth: (rows, D) features, and the queries' states.
    state_rows = [row_of_node[q] for q in tree.query_nodes] if with_state else []
    seed_states = use.seed_states() if use is not None and use.seeds else None
    features, all_states = run_tree(
        net, plan, state_rows + [row_of_node[v] for v in keep], checkpoints, seed_states
    )
    query_states = all_states[:, : len(state_rows)] if all_states is not None and with_state else None

    # 2. The output layer, chunk by chunk: only target log-probs and the queries' rows survive.
    #    An edge the cache covers takes its log-prob from there instead.
    edge_lp = torch.zeros(tree.num_nodes, device=device)  # node -> log P(its token | its parent)
    if use is not None:
        use.fill_covered(edge_lp)
    edges = [v for v, p in enumerate(tree.parent) if p >= 0 and (use is None or use.cover[v] < 0)]
    edge_nodes = torch.tensor(edges, dtype=torch.long)
    src = torch.tensor([row_of_node[tree.parent[v]] for v in edges], dtype=torch.long)
    tgt = torch.tensor([tree.token[v] for v in edges], dtype=torch.long)
    order = torch.argsort(src, stable=True)
    src, tgt, edge_nodes = src[order], tgt[order], edge_nodes[order]
    q_rows = torch.tensor([row_of_node[q] for q in tree.query_nodes], dtype=torch.long)
    next_lp = torch.empty(len(queries), lm.vocab_size, device=device) if queries else None
    chunk = max(1, max_logits // lm.vocab_size)
    output = lm.tree_output(tree, plan)  # the model's output layer (the hybrid's adds its n-gram)
    n_rows = features.size(0)  # computed rows, then the seeds'
    for a in range(0, n_rows, chunk):
        b = min(a + chunk, n_rows)
        logits = output(features[a:b], a).float()  # (c, V)
        lse = torch.logsumexp(logits, dim=-1)  # (c,)
        lo, hi = int(torch.searchsorted(src, a)), int(torch.searchsorted(src, b))
        if hi > lo:
            local = (src[lo:hi] - a).to(device)
            picked = logits[local, tgt[lo:hi].to(device)] - lse[local]  # (e,)
            edge_lp[edge_nodes[lo:hi].to(device)] = picked
        if next_lp is not None:
            inside = ((q_rows >= a) & (q_rows < b)).nonzero().squeeze(1)
            if inside.numel():
                local = (q_rows[inside] - a).to(device)
                next_lp[inside.to(device)] = logits[local] - lse[local].unsqueeze(1)
        checkpoints.advance(b - a)

    # 3. Back to sequences: one gather, then split.
    flat = [v for path in tree.paths for v in path[1:]]
    picked = edge_lp[torch.tensor(flat, dtype=torch.long, device=device)].double().cpu()
    sizes = [max(len(path) - 1, 0) for path in tree.paths]
    logprobs = list(picked.split(sizes)) if seqs else []

    # 4. Keep the states worth keeping (the pass is complete: nothing half-done is stored).
    if cache is not None:
        hits = use.hits if use is not None else 0
        cache.stats.hits += hits
        cache.stats.misses += sum(1 for path in tree.paths if path) + len(tree.query_nodes) - hits
        if keep and all_states is not None:
            _store(cache, tree, keep, all_states[:, len(state_rows) :], edge_lp)
    return TreeResult(logprobs, next_lp, query_states, plan.num_rows, requested, tree)


@dataclass
class _CacheUse:
    """What a prefix tree takes from a cache: seeds (cached nodes whose state a computed node or
    an output row needs), the edges whose log-prob the cache covers, and the nodes left to compute.

    ``cover[v]`` is a cached node at or below ``v`` (-1: none): its entry holds the log-prob of
    every token on its path, ``v``'s among them."""

    found: list[CachedPrefix | None]
    cover: list[int]
    depth: list[int]  # node -> its prefix's length
    computed: list[bool]
    seeds: list[int]
    hits: int  # sequences and queries with a cached prefix on their path

    @classmethod
    def match(cls, tree: PrefixTree, cache: PrefixStateCache, lm: object) -> _CacheUse | None:
        """What ``tree`` takes from ``cache``; None when the cache holds none of its prefixes."""
        cache.bind(lm)
        parent, n = tree.parent, tree.num_nodes
        found = cache.match_tree(parent, tree.token, tree.scope)
        if not any(e is not None for e in found):
            return None
        depth = [0] * n
        deepest = [-1] * n  # node -> the deepest cached node on its path (itself included)
        for v in range(n):
            p = parent[v]
            depth[v] = depth[p] + 1 if p >= 0 else 1
            deepest[v] = v if found[v] is not None else (deepest[p] if p >= 0 else -1)
        cover = [-1] * n
        need = [False] * n  # the node's state (or output row) is needed
        for q in tree.query_nodes:
            need[q] = True
        for v in reversed(range(n)):  # children before parents: a node's cover and need are final
            if found[v] is not None:
                cover[v] = v
            p = parent[v]
            if p < 0:
                continue
            if cover[v] < 0:  # the edge into v is computed: its parent's output row is needed
                need[p] = True
            elif cover[p] < 0:
                cover[p] = cover[v]
            if need[v] and found[v] is None:  # v is computed from its parent's state
                need[p] = True
        computed = [need[v] and found[v] is None for v in range(n)]
        seeds = [v for v in range(n) if need[v] and found[v] is not None]
        ends = [path[-1] for path in tree.paths if path] + list(tree.query_nodes)
        hits = sum(1 for v in ends if deepest[v] >= 0)
        return cls(found, cover, depth, computed, seeds, hits)

    def seed_states(self) -> Tensor:
        """(L, S, state width): the seeds' cached states, in seed order."""
        return torch.stack([self._entry(v).state for v in self.seeds], dim=1)

    def fill_covered(self, edge_lp: Tensor) -> None:
        """Write the cached log-prob of every covered edge into ``edge_lp`` (node -> log-prob)."""
        by_entry: dict[int, tuple[list[int], list[int]]] = {}
        for v, u in enumerate(self.cover):
            if u >= 0 and self.depth[v] >= 2:  # the start token has no edge
                nodes, positions = by_entry.setdefault(u, ([], []))
                nodes.append(v)
                positions.append(self.depth[v] - 2)
        for u, (nodes, positions) in by_entry.items():
            lp = self._entry(u).logprobs
            index = torch.tensor(positions, dtype=torch.long, device=lp.device)
            edge_lp[torch.tensor(nodes, dtype=torch.long, device=edge_lp.device)] = lp[index].to(edge_lp)

    def _entry(self, v: int) -> CachedPrefix:
        entry = self.found[v]
        assert entry is not None
        return entry


def _prefixes_to_keep(
    tree: PrefixTree, row_of_node: list[int], num_rows: int, cache: PrefixStateCache | None
) -> list[int]:
    """Computed nodes whose state the cache should keep, most useful first, at most
    ``cache.max_store_per_pass``: the queries' prefixes (the next keystroke extends them), then the
    prefixes where candidates part (a list's shared context), then each sequence's last fed
    prefix (a text scored as it grows)."""
    if cache is None or cache.max_store_per_pass == 0:
        return []
    children = [0] * tree.num_nodes
    for p in tree.parent:
        if p >= 0:
            children[p] += 1
    order = [
        *tree.query_nodes,
        *(v for v in range(tree.num_nodes) if children[v] >= 2),
        *(path[-2] for path in tree.paths if len(path) >= 2),
    ]
    keep: list[int] = []
    for v in dict.fromkeys(order):
        if 0 <= row_of_node[v] < num_rows:  # computed in this pass (seeds are cached already)
            keep.append(v)
            if len(keep) == cache.max_store_per_pass:
                break
    return keep


def _store(
    cache: PrefixStateCache, tree: PrefixTree, keep: list[int], states: Tensor, edge_lp: Tensor
) -> None:
    """Put each kept node's state (a column of ``states`` (L, K, S)) and its path's log-probs."""
    for i, v in enumerate(keep):
        path = [v]
        while tree.parent[path[-1]] >= 0:
            path.append(tree.parent[path[-1]])
        path.reverse()
        key = [tree.token[u] for u in path]
        nodes = torch.tensor(path[1:], dtype=torch.long, device=edge_lp.device)
        cache.put(key, states[:, i].clone(), edge_lp[nodes].clone(), scope=tree.scope[v])


def score_each(
    lm: ScoringModel,
    seqs: Sequence[Sequence[int]],
    queries: Sequence[Sequence[int]] = (),
    *,
    with_state: bool = False,
    share: bool = True,
    max_logits: int = MAX_LOGITS,
    should_stop: StopCheck | None = None,
    chunk_positions: int = CHUNK_POSITIONS,
    cache: PrefixStateCache | None = None,
    scopes: Sequence[Hashable] | None = None,
) -> TreeResult:
    """Any model: its own batched ``sequence_logprobs`` and ``prefill``, no sharing (the default
    :meth:`~model.models.lm.LanguageModel.score_tree`). Sequences go in groups of about
    ``chunk_positions`` positions, with ``should_stop`` asked between groups. A prefix-state
    ``cache`` (and its ``scopes``) does not apply (its states are an RNN's): it is left alone."""
    checkpoints = _Checkpoints(should_stop, chunk_positions)
    logprobs = [torch.zeros(0, dtype=torch.float64)] * len(seqs)
    scored = [i for i, s in enumerate(seqs) if len(s) > 1]
    per_group = chunk_positions if should_stop is not None else None  # None: one group
    for group in _groups(scored, seqs, per_group):
        for i, lp in zip(group, lm.sequence_logprobs([seqs[i] for i in group]), strict=True):
            logprobs[i] = lp
        checkpoints.advance(sum(len(seqs[i]) - 1 for i in group))
    parts, state_parts = [], []
    for group in _groups(list(range(len(queries))), queries, per_group):
        prefixes = [queries[q] for q in group]
        lp, state = lm.prefill(prefixes)
        parts.append(lp)
        state_parts.append(state)
        checkpoints.advance(requested_positions((), prefixes))
    next_lp = (parts[0] if len(parts) == 1 else torch.cat(parts)) if parts else None
    states = None
    if parts and with_state:
        states = state_parts[0] if len(state_parts) == 1 else lm.concat_states(state_parts)
    n = requested_positions(seqs, queries)
    return TreeResult(logprobs, next_lp, states, n, n)


def _groups(indices: list[int], seqs: Sequence[Sequence[int]], positions: int | None) -> list[list[int]]:
    """``indices`` in order, cut into runs of about ``positions`` positions (None: one run)."""
    if positions is None:
        return [indices] if indices else []
    groups: list[list[int]] = []
    size = 0
    for i in indices:
        if not groups or size >= positions:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += max(len(seqs[i]) - 1, 1)
    return groups
