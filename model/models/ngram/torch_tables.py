"""The backoff tables of :mod:`model.models.ngram.tables` as torch tensors, on any device.

The numpy :class:`~model.models.ngram.tables.BackoffTables` serve one request at a time on the CPU. Training
a hybrid model (:mod:`model.models.hybrid`) needs the n-gram's *whole* next-token distribution at every
position of every batch, thousands of rows at once, on the GPU when there is one; serving a hybrid
needs it at every position of a prefix tree and at every decoding step. The same backoff, in
torch, vectorized over rows::

    histories (N, order-1) ─▶ contexts: index of the last n tokens in order n (N, order-1)
    (or, while decoding, contexts ─▶ advance(contexts, token); over a prefix tree, tree_contexts)
                           ─▶ 1-gram row + every present context's backoff (one pass over V),
                              then each order overwrites the tokens its context has seen
                           ─▶ ln P(w | history) (N, V)

A row's contexts are what KenLM calls its state: a few table indices, carried from step to step,
so a step costs one look-up per order and never re-reads the history. Tests check the result
against the numpy version on the same tables; ``python -m rnnlm.bench.ngram`` times it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model.models.ngram.tables import BackoffTables
from model.text.tokenizer import BOS_ID, PAD_ID

DENSE_MIN_SEEN = 128  # a one-token context followed by this many distinct tokens gets a ready row
DENSE_MAX_BYTES = 32 << 20  # at most this much of them (pd98 kn5: 592 rows, 10.4 MiB)


class TorchBackoffTables:
    """One or several tables (same vocabulary and order) on a device.

    Several tables are stacked into one, so a batch whose rows need different tables (the
    held-out folds of :mod:`model.training.fit`) is looked up in one pass: table g's n-grams get indices
    after those of tables 0..g-1, and its 1-gram for token t is row ``g·V + t``.

    The n-grams of orders 2..N are kept in one sorted tensor, order after order, so that one
    search and one gather serve every order of every row at once::

        ngram_keys  [ order 2: key ][ order 3: base_3 + key ] … [ order N: base_N + key ]
        key = index of the context (the first n-1 tokens) in order n-1 · V + last token
    """

    def __init__(
        self,
        tables: BackoffTables | list[BackoffTables],
        device: torch.device | str = "cpu",
        dense_min_seen: int = DENSE_MIN_SEEN,
        dense_max_bytes: int = DENSE_MAX_BYTES,
    ) -> None:
        group = tables if isinstance(tables, list) else [tables]
        first = group[0]
        if any(t.vocab_size != first.vocab_size or t.order != first.order for t in group):
            raise ValueError("stacked tables need one vocabulary and one order")
        self.vocab_size, self.order, self.groups = first.vocab_size, first.order, len(group)
        V = self.vocab_size
        # offset[m][g]: where table g's order-(m+1) entries start in the stacked order-(m+1) table
        offset = [[g * V for g in range(len(group))]]
        for m in range(1, self.order):
            sizes = [len(t.keys[m]) for t in group]
            offset.append([sum(sizes[:g]) for g in range(len(group))])
        self.sizes = [sum(len(t.keys[m]) for t in group) for m in range(self.order)]  # n-grams per order
        # base[n]: what order n's keys are shifted by in ngram_keys (past every key of lower orders)
        self.base = [0, 0, 0]
        for n in range(3, self.order + 1):
            self.base.append(self.base[n - 1] + self.sizes[n - 3] * V)
        keys = []
        for m in range(1, self.order):  # order m+1: key = stacked prefix index * V + token
            for g, t in enumerate(group):
                k = torch.from_numpy(t.keys[m])
                keys.append((k // V + offset[m - 1][g]) * V + k % V + self.base[m + 1])
        self.ngram_keys = (torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)).to(device)
        self.start = [0, 0] + [sum(self.sizes[1 : n - 1]) for n in range(2, self.order + 2)]
        self.ngram_logprob = torch.cat(
            [torch.zeros(0)]
            + [torch.from_numpy(t.logprob[m]).float() for m in range(1, self.order) for t in group]
        ).to(device)
        self.unigram = torch.cat([torch.from_numpy(t.logprob[0]).float() for t in group]).to(device)
        # every context's ln b, order after order, after one 0 for "no context" (index 0)
        self.backoff_at = [1 + sum(self.sizes[: n - 1]) for n in range(1, self.order)]  # order n's first
        self.logbackoff = torch.cat(
            [torch.zeros(1)]
            + [torch.from_numpy(t.logbackoff[m]).float() for m in range(self.order - 1) for t in group]
        ).to(device)
        # the same per order 2..N as small tensors (shift, first entry, first backoff), for the bulk paths
        self._shift = torch.tensor(self.base[2:], dtype=torch.long, device=device)  # (N - 1,)
        self._first = torch.tensor(self.start[2 : self.order + 1], dtype=torch.long, device=device)
        self._backoff_at = torch.tensor(self.backoff_at, dtype=torch.long, device=device)  # orders 1..N-1
        self._never = torch.tensor([PAD_ID, BOS_ID], dtype=torch.long, device=device)
        # The base rows a distribution starts from: each table's 1-gram row, then the bigram rows of
        # the frequent one-token contexts (see ``context_logprobs``); dense_slot[c + 1]: c's row or -1
        self.dense_rows = self.unigram.view(self.groups, V).clone()  # (G + K, V)
        self.dense_slot = torch.full((self.sizes[0] + 1,), -1, dtype=torch.long, device=device)
        if self.order > 1:
            self._add_dense_rows(dense_min_seen, dense_max_bytes)

    def _add_dense_rows(self, min_seen: int, max_bytes: int) -> None:
        """Precompute the bigram rows of the one-token contexts followed by at least ``min_seen``
        distinct tokens, most followed first, within ``max_bytes``."""
        V = self.vocab_size
        seen = torch.bincount(self.keys(2) // V, minlength=self.sizes[0])  # (G·V,)
        wanted = torch.nonzero(seen >= min_seen).squeeze(1)
        wanted = wanted[torch.argsort(seen[wanted], descending=True, stable=True)]
        wanted = wanted[: max(0, max_bytes // (4 * V))]
        if wanted.numel() == 0:
            return
        contexts = torch.full((len(wanted), self.order - 1), -1, dtype=torch.long, device=wanted.device)
        contexts[:, 0] = wanted
        rows = self.context_logprobs(contexts, wanted // V)  # (K, V): lines 1 and 2, nothing longer
        self.dense_slot[wanted + 1] = torch.arange(len(wanted), device=wanted.device) + len(self.dense_rows)
        self.dense_rows = torch.cat([self.dense_rows, rows])

    def keys(self, n: int) -> Tensor:
        """Order n's keys (n >= 2), sorted: context index · V + token (a view, shifted back)."""
        return self.ngram_keys[self.start[n] : self.start[n + 1]] - self.base[n]

    def find(self, n: int, prefix: Tensor, token: Tensor) -> Tensor:
        """Index of the n-gram ``prefix-ngram + token`` in order n (n >= 2), or -1 if absent."""
        lo, hi = self.start[n], self.start[n + 1]
        if hi == lo:
            return torch.full_like(prefix, -1)
        keys = self.ngram_keys[lo:hi]
        wanted = prefix * self.vocab_size + token + self.base[n]
        at = torch.searchsorted(keys, wanted).clamp_(max=hi - lo - 1)
        found = (prefix >= 0) & (keys[at] == wanted)
        return torch.where(found, at, torch.full_like(at, -1))

    def context_indices(self, histories: Tensor, group: Tensor | None = None) -> Tensor:
        """(N, W) histories, left-padded with ``<pad>`` -> (N, W): column n-1 is the index of the
        history's last n tokens in order n, or -1. ``group`` (N,) picks each row's table."""
        n_rows, width = histories.shape
        if width == 0:
            return histories.new_zeros((n_rows, 0))
        real = histories != PAD_ID
        first = histories if group is None else histories + group.unsqueeze(1) * self.vocab_size
        ending = torch.where(real, first, torch.full_like(histories, -1))  # order 1, (N, W)
        columns = [ending[:, -1]]
        for n in range(2, width + 1):
            longer = torch.full_like(ending, -1)
            longer[:, 1:] = self.find(n, ending[:, :-1], histories[:, 1:])
            longer[:, 1:] = torch.where(real[:, 1:], longer[:, 1:], torch.full_like(longer[:, 1:], -1))
            ending = longer
            columns.append(ending[:, -1])
        return torch.stack(columns, dim=1)

    # -- contexts as ids: the state of a row is its contexts, not its tokens -----------------------
    def start_contexts(self, n_rows: int) -> Tensor:
        """(N, order-1) contexts of rows that have read nothing: every column -1."""
        return torch.full((n_rows, self.order - 1), -1, dtype=torch.long, device=self.unigram.device)

    def advance(self, contexts: Tensor, tokens: Tensor) -> Tensor:
        """The contexts (N, W) after each row reads one more token (N,): the n-gram ending at it
        is its old (n-1)-gram context extended by the token, every order in one search."""
        width = contexts.size(1)
        if width == 0:
            return contexts
        tokens = tokens.to(contexts.device, torch.long).unsqueeze(1)  # (N, 1)
        before = contexts[:, :-1]  # (N, W - 1): the contexts of orders 2..W
        wanted = (
            before * self.vocab_size + tokens + self._shift[: width - 1]
        )  # (N, W - 1), in ngram_keys' terms
        at = torch.searchsorted(self.ngram_keys, wanted).clamp_(max=max(len(self.ngram_keys) - 1, 0))
        found = (before >= 0) & (self.ngram_keys[at] == wanted) if len(self.ngram_keys) else before < -1
        longer = torch.where(found, at - self._first[: width - 1], -1)
        return torch.cat([tokens, longer], dim=1)

    def tree_contexts(self, parent: Tensor, token: Tensor) -> Tensor:
        """(M, order-1) contexts after each node of a prefix tree (``parent`` (M,), -1 at the
        root, ``token`` (M,) the node's token): the n-gram ending at a node is its parent's
        (n-1)-gram extended by its token, so one look-up per order covers every node at once."""
        if self.order == 1:
            return token.new_zeros((len(token), 0))
        has_parent = parent >= 0
        at = parent.clamp(min=0)
        columns = [token]
        for n in range(2, self.order):
            before = torch.where(has_parent, columns[-1][at], torch.full_like(token, -1))
            columns.append(self.find(n, before, token))
        return torch.stack(columns, dim=1)

    # -- distributions ----------------------------------------------------------------------------
    def next_logprobs(self, histories: Tensor, group: Tensor | None = None) -> Tensor:
        """(N, V) float32 ln P(w | history) for every token w (see the module docstring);
        ``group`` (N,) picks each row's table when several are stacked (default: the first)."""
        return self.context_logprobs(self.context_indices(histories, group), group)

    def context_logprobs(self, contexts: Tensor, group: Tensor | None = None) -> Tensor:
        """(N, V) float32 ln P(w | contexts) from each row's contexts (N, order-1) (as
        :meth:`context_indices`, :meth:`advance` or :meth:`tree_contexts` give them).

        A token whose longest present n-gram has order k gets ln p*(that n-gram) plus the backoffs
        of every longer context: ``tail[:, k-1]``, the backoffs summed from order k+1 up. So a row
        starts as one base row plus a constant (one pass over V), and each order then writes only
        the tokens its context has seen, shortest first (a longer n-gram wins)::

            row  = lnp1[w] + b(c1) + b(c2) + b(c3) + b(c4)       every w (c_j: the j-gram context)
            row[seen after c1] = lnp2 + b(c2) + b(c3) + b(c4)    ~500 tokens after a frequent character
            row[seen after c2] = lnp3 + b(c3) + b(c4)            …
            row[seen after c4] = lnp5                            a few

        The first two lines are the same for every row with the same one-token context ``c1``;
        for the frequent ones they are precomputed (``dense_rows``), so such a row starts from its
        ready row plus ``tail[:, 1]`` and only the longer orders write into it. Every order's
        writes are found with one search and one gather over ``ngram_keys``; each value depends
        on its row alone (no sum across rows), so a row's result does not depend on its batch.
        """
        n_rows, width = contexts.shape
        V = self.vocab_size
        rows = torch.arange(n_rows, device=contexts.device)
        base = group if group is not None else torch.zeros_like(rows)  # each row's 1-gram row
        if width == 0:
            return self.dense_rows.index_select(0, base).index_fill_(1, self._never, float("-inf"))
        present = contexts >= 0  # (N, W)
        backoff = self.logbackoff[torch.where(present, contexts + self._backoff_at, 0)]  # (N, W), 0 if absent
        tail = F.pad(backoff.flip(1).cumsum(1).flip(1), (0, 1))  # (N, W + 1): backoffs from order k+2 up
        slot = self.dense_slot[contexts[:, 0] + 1]  # (N,): a ready row for c1, or -1
        dense = slot >= 0
        base = torch.where(dense, slot, base)
        shift = torch.where(dense, tail[:, 1], tail[:, 0])
        logp = self.dense_rows.index_select(0, base).add_(shift.unsqueeze(1))  # (N, V)

        # every (order, row) pair with a context: the range of n-grams that extend it
        ctx = contexts.t().contiguous()  # (W, N): row j holds the contexts of order j + 2
        ctx[0].masked_fill_(dense, -1)  # a ready row already has order 2
        base_n = self._shift.unsqueeze(1)  # (W, 1)
        query = ctx * V + base_n
        lo = torch.searchsorted(self.ngram_keys, query)
        sizes = torch.where(ctx >= 0, torch.searchsorted(self.ngram_keys, query + V) - lo, 0)  # (W, N)
        per_order = sizes.sum(1).tolist()
        total = sum(per_order)
        if total:
            sizes = sizes.view(-1)
            segment = torch.repeat_interleave(sizes)  # (E,): the pair of each entry
            entry = (
                torch.arange(total, device=ctx.device) + (lo.view(-1) - (sizes.cumsum(0) - sizes))[segment]
            )
            where = self.ngram_keys[entry] + ((rows - ctx) * V - base_n).view(-1)[segment]  # row · V + token
            value = self.ngram_logprob[entry] + tail[:, 1:].t().reshape(-1)[segment]
            flat, done = logp.view(-1), 0
            for count in per_order:  # shortest order first: a longer n-gram overwrites a shorter one
                if count:
                    flat[where[done : done + count]] = value[done : done + count]
                    done += count
        logp.index_fill_(1, self._never, float("-inf"))  # <pad>, <bos>: never predicted
        return logp


def histories_of(stream: Tensor, position: Tensor, width: int) -> Tensor:
    """(N, width) left-padded histories of a token stream, cut at sentence starts.

    ``stream`` (N,) holds input tokens, ``position`` (N,) each token's index in its sentence
    (``<bos>`` is 0). Row i is ``stream[i-width+1 .. i]`` with ``<pad>`` where that reaches back past
    the start of token i's sentence: the history an n-gram of order ``width + 1`` conditions on.
    """
    cols = []
    for back in range(width - 1, -1, -1):
        shifted = torch.roll(stream, back)
        cols.append(torch.where(position >= back, shifted, torch.full_like(stream, PAD_ID)))
    return torch.stack(cols, dim=1) if cols else stream.new_zeros((len(stream), 0))
