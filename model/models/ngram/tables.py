"""The backoff form every n-gram model compiles to (the shape of an ARPA file).

For each order n, a sorted table of n-grams g (keys as in :mod:`model.models.ngram.counts`) with

* ``logprob[n][g]``: ln p*(g), the model's probability of g's last token after its prefix, and
* ``logbackoff[n][g]`` (n < order): ln b(g), the weight given to shorter contexts after g.

A probability is then read by *backing off*::

    P(w | h) = p*(h w)                   if h w is in the table
             = b(h) · P(w | h[1:])       otherwise (b(h) = 1 when h is not in the table either)

so it is the longest n-gram ``h[i:] w`` that is present, times the backoff weights of every longer
context. Every smoothing method of :mod:`model.models.ngram.smoothing` (add-k, interpolation, Katz,
Kneser-Ney) produces tables in this form, and so does an ARPA file written by KenLM or SRILM.

Log-probs are natural logs, stored as float32 (as KenLM stores them) and summed in float64.
``<pad>`` and ``<bos>`` have probability 0 (ln = -inf): ``<bos>`` is context only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.text.tokenizer import BOS_ID, PAD_ID


@dataclass
class BackoffTables:
    vocab_size: int
    keys: list[np.ndarray]  # keys[n-1]: (m_n,) int64 sorted; keys[0] == arange(V)
    logprob: list[np.ndarray]  # logprob[n-1]: (m_n,) float32, ln p*(g)
    logbackoff: list[np.ndarray]  # logbackoff[n-1]: (m_n,) float32, ln b(g), for n < order

    def __post_init__(self) -> None:
        V = self.vocab_size
        if not self.keys or len(self.keys[0]) != V:
            raise ValueError(f"the 1-gram table must list all {V} tokens")
        if len(self.logprob) != self.order or len(self.logbackoff) != self.order - 1:
            raise ValueError("one log-prob table per order and one backoff table per order but the last")
        for n, (k, p) in enumerate(zip(self.keys, self.logprob, strict=True), start=1):
            if len(k) != len(p) or (n < self.order and len(self.logbackoff[n - 1]) != len(k)):
                raise ValueError(f"order {n}: keys, log-probs and backoffs differ in length")
            if len(k) > 1 and not bool(np.all(k[1:] > k[:-1])):
                raise ValueError(f"order {n}: keys are not sorted and unique")
            if n > 1 and len(k) and (k[0] < 0 or k[-1] >= len(self.keys[n - 2]) * V):
                raise ValueError(f"order {n}: a key points outside the order-{n - 1} table")

    @property
    def order(self) -> int:
        return len(self.keys)

    def sizes(self) -> list[int]:
        """N-grams per order, as an ARPA header counts them (every 1-gram but ``<pad>``)."""
        return [len(k) - (n == 0) for n, k in enumerate(self.keys)]

    # -- lookup ---------------------------------------------------------------------------------
    def find(self, n: int, prefix: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Index of the n-gram ``prefix-ngram + token`` in order n (n >= 2), or -1 if absent."""
        keys = self.keys[n - 1]
        wanted = prefix * self.vocab_size + token
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = (prefix >= 0) & (len(keys) > 0)
        if len(keys):
            found &= keys[at] == wanted
        return np.where(found, at, -1)

    def ending_indices(self, tokens: np.ndarray, position: np.ndarray) -> list[np.ndarray]:
        """For every order n, the index of the n-gram ending at each position (or -1).

        ``position`` counts from each sequence's start (see :func:`~model.models.ngram.counts.flatten`);
        a window never reaches back past it, and a negative position marks "no token here".
        """
        ending = [np.where(position >= 0, tokens, -1)]
        for n in range(2, self.order + 1):
            idx = np.full(len(tokens), -1, dtype=np.int64)
            at = np.flatnonzero(position >= n - 1)
            idx[at] = self.find(n, ending[-1][at - 1], tokens[at])
            ending.append(idx)
        return ending

    # -- probabilities --------------------------------------------------------------------------
    def target_logprobs(self, tokens: np.ndarray, position: np.ndarray) -> np.ndarray:
        """ln P(token[p] | the tokens before it in its sequence), for every p with position >= 1.

        Returns an array aligned with ``tokens`` (NaN where position < 1).
        """
        ending = self.ending_indices(tokens, position)
        out = np.full(len(tokens), np.nan)
        at = np.flatnonzero(position >= 1)
        # Start from the 1-gram and replace with each longer n-gram that is present; when it is
        # absent, back off: multiply by b(context) (add its log).
        logp = self.logprob[0][tokens[at]].astype(np.float64)
        for n in range(2, self.order + 1):
            context = ending[n - 2][at - 1]  # the (n-1)-gram before the target
            gram = ending[n - 1][at]
            has_context = context >= 0
            backoff = np.zeros(len(at))
            backoff[has_context] = self.logbackoff[n - 2][context[has_context]]
            present = gram >= 0
            logp = np.where(present, 0.0, logp + backoff)
            logp[present] = self.logprob[n - 1][gram[present]]
        out[at] = logp
        return out

    def context_indices(self, histories: np.ndarray) -> np.ndarray:
        """(B, order-1) histories (left-padded with ``<pad>``) -> (B, order-1) context indices.

        Column n-1 is the index of the last n tokens of the history in order n, or -1.
        """
        B, width = histories.shape
        if width == 0:
            return np.zeros((B, 0), dtype=np.int64)
        real = histories != PAD_ID
        # position of each token from the start of its history (pads count as "no token")
        start = width - np.cumprod(real[:, ::-1], axis=1).sum(axis=1)  # first real column
        position = np.arange(width)[None, :] - start[:, None]
        position = np.where(position >= 0, position, -1)
        ending = self.ending_indices(histories.reshape(-1), position.reshape(-1))
        return np.stack([e.reshape(B, width)[:, -1] for e in ending[:width]], axis=1)

    def next_logprobs(self, histories: np.ndarray) -> np.ndarray:
        """(B, V) ln P(w | history) for every token w, histories as in :meth:`context_indices`.

        Built from the shortest context up: the 1-gram distribution, then for each longer context
        that is present, add ln b(context) everywhere and overwrite the tokens it has seen.
        """
        B = len(histories)
        V = self.vocab_size
        contexts = self.context_indices(histories)  # (B, order-1)
        logp = np.broadcast_to(self.logprob[0].astype(np.float64), (B, V)).copy()  # (B, V)
        for n in range(2, self.order + 1):
            context = contexts[:, n - 2]  # (B,)
            rows = np.flatnonzero(context >= 0)
            if len(rows) == 0:
                continue
            logp[rows] += self.logbackoff[n - 2][context[rows]][:, None]
            keys = self.keys[n - 1]
            lo = np.searchsorted(keys, context[rows] * V)
            hi = np.searchsorted(keys, (context[rows] + 1) * V)
            sizes = hi - lo
            row_of = np.repeat(rows, sizes)
            entry = np.repeat(lo - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
            token = keys[entry] - context[row_of] * V
            logp[row_of, token] = self.logprob[n - 1][entry]
        logp[:, [PAD_ID, BOS_ID]] = -np.inf
        return logp

    # -- token tuples (for ARPA and inspection) --------------------------------------------------
    def ngram_tokens(self, n: int) -> np.ndarray:
        """(m_n, n) token ids of every n-gram of order n, in table order."""
        V = self.vocab_size
        ids = self.keys[0][:, None]
        for k in range(2, n + 1):
            keys = self.keys[k - 1]
            ids = np.concatenate([ids[keys // V], (keys % V)[:, None]], axis=1)
        return ids
