"""The n-gram model behind the :class:`~model.models.lm.LanguageModel` interface the RNN uses.

The decoding state of a row is its last ``order - 1`` token ids, left-padded with ``<pad>``
(which means "nothing before this"): a 5-gram that has read ``<bos> 厨 房`` holds
``[<pad>, <bos>, 厨, 房]``. ``step`` shifts the new ids in and returns the full next-token
distribution (B, V); ``sequence_logprobs`` looks up only the tokens it needs (no (T, V) work).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from model.models.lm import LanguageModel
from model.models.ngram.counts import count_ngrams, flatten
from model.models.ngram.smoothing import SMOOTHERS
from model.models.ngram.tables import BackoffTables
from model.text.batching import with_boundaries
from model.text.tokenizer import PAD_ID, Tokenizer


class NGramLanguageModel(LanguageModel):
    kind = "ngram"

    def __init__(
        self,
        tables: BackoffTables,
        tokenizer: Tokenizer,
        smoothing: str = "unknown",
        params: dict | None = None,
    ) -> None:
        if tables.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"the tables have {tables.vocab_size} tokens, the tokenizer {tokenizer.vocab_size}"
            )
        self.tables = tables
        self.tokenizer = tokenizer
        self.smoothing = smoothing  # addk | interp | katz | kn | arpa (read from a file)
        self.params = dict(params or {})  # k, epsilon, discounts, ... (recorded in config.json)
        self.metrics: dict = {}

    @property
    def order(self) -> int:
        return self.tables.order

    # -- scoring --------------------------------------------------------------------------------
    def sequence_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[Tensor]:
        tokens, position = flatten(seqs, self.vocab_size)
        logp = self.tables.target_logprobs(tokens, position)
        out, start = [], 0
        for s in seqs:
            out.append(torch.from_numpy(logp[start + 1 : start + len(s)].copy()))
            start += len(s)
        return out

    # -- decoding -------------------------------------------------------------------------------
    def start_state(self, batch_size: int) -> Tensor:
        return torch.full((batch_size, self.order - 1), PAD_ID, dtype=torch.long)  # (B, N-1)

    def step(self, state: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        ids = ids.view(-1, 1).to(device=state.device, dtype=torch.long)  # (B, 1)
        state = torch.cat([state, ids], dim=1)[:, 1:] if self.order > 1 else state  # (B, N-1)
        return self._next_logprobs(state), state

    def _prefill_equal(self, prefixes: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        state = torch.from_numpy(histories_array(prefixes, self.order))  # (B, N-1)
        return self._next_logprobs(state), state

    def _next_logprobs(self, state: Tensor) -> Tensor:
        histories = state.cpu().numpy()
        if histories.size and (histories.min() < 0 or histories.max() >= self.vocab_size):
            raise ValueError(f"token id outside the vocabulary (size {self.vocab_size})")
        logp = self.tables.next_logprobs(histories)  # (B, V) float64
        return torch.from_numpy(logp).float()

    def select_state(self, state: Tensor, rows: Sequence[int] | Tensor) -> Tensor:
        return state.index_select(0, torch.as_tensor(rows, dtype=torch.long, device=state.device))

    def concat_states(self, states: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(states), dim=0)

    def context_width(self) -> int | None:
        """The last ``order - 1`` tokens decide the next one."""
        return self.order - 1

    def describe(self) -> dict:
        return {
            **super().describe(),
            "order": self.order,
            "smoothing": self.smoothing,
            "ngrams": self.tables.sizes(),
            "device": "cpu",
        }


def build_ngram(
    tokenizer: Tokenizer, lines: Sequence[str], order: int, smoothing: str = "kn", **params: float
) -> NGramLanguageModel:
    """Count ``lines`` (as ``[<bos>, …, <eos>]`` id sequences) and smooth them into a model."""
    if smoothing not in SMOOTHERS:
        raise ValueError(f"smoothing must be one of {sorted(SMOOTHERS)}, got {smoothing!r}")
    seqs = [with_boundaries(tokenizer.encode(line).ids) for line in lines]
    return from_sequences(tokenizer, seqs, order, smoothing, None, **params)


def from_sequences(
    tokenizer: Tokenizer,
    seqs: Sequence[Sequence[int]],
    order: int,
    smoothing: str = "kn",
    prune: str | Sequence[int] | None = None,
    **params: float,
) -> NGramLanguageModel:
    """Count, smooth and (with ``prune``: count thresholds per order, see
    :mod:`model.models.ngram.prune`) prune a model of id sequences."""
    counts = count_ngrams(seqs, order, tokenizer.vocab_size)
    tables, info = SMOOTHERS[smoothing](counts, **params)
    if prune:
        from model.models.ngram.prune import parse_thresholds
        from model.models.ngram.prune import prune as prune_tables

        thresholds = parse_thresholds(prune, order)
        tables = prune_tables(counts, tables, thresholds)
        info = {**info, "prune": thresholds}
    return NGramLanguageModel(tables, tokenizer, smoothing, info)


def histories_array(prefixes: Sequence[Sequence[int]], order: int) -> np.ndarray:
    """(B, order-1) left-padded histories: the last order-1 ids of each prefix."""
    width = order - 1
    out = np.full((len(prefixes), width), PAD_ID, dtype=np.int64)
    for row, p in enumerate(prefixes):
        tail = list(p)[-width:] if width else []
        if tail:
            out[row, width - len(tail) :] = tail
    return out
