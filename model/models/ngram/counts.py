"""Counting n-grams: every order at once, in sorted numpy tables (no Python dict per n-gram).

Each sentence is ``[<bos>, w1, …, wn, <eos>]``, as the RNN sees it. An n-gram is counted where
it *predicts* a token: at every position after ``<bos>``, the window of the last n tokens, cut at
the sentence start. So ``<bos>`` is only ever context (never predicted) and ``<eos>`` is predicted
once per sentence, exactly as KenLM's ``lmplz`` counts ``<s>`` and ``</s>``::

    sentence   <bos>  厨   房   里  <eos>
    1-grams           厨   房   里  <eos>
    2-grams    <bos> 厨 | 厨 房 | 房 里 | 里 <eos>
    3-grams    <bos> 厨 房 | 厨 房 里 | 房 里 <eos>

Storage is a trie flattened into one sorted array per order. An n-gram is named by its
*index* in its order's table; its key is ``prefix_index * V + last_token``, where the prefix is
the (n-1)-gram without the last token (1-grams are dense: the key is the token id). So

* the children of a context (every n-gram ``h w``) are one contiguous run of the sorted keys,
  found with two ``searchsorted`` calls, and
* looking an n-gram up is n binary searches, vectorized over as many n-grams as we like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.text.tokenizer import BOS_ID


@dataclass
class OrderCounts:
    """Every distinct n-gram of one order, sorted by key."""

    keys: np.ndarray  # (m,) int64, sorted: prefix_index * V + last token (order 1: the token id)
    counts: np.ndarray  # (m,) int64: how often the n-gram predicted its last token
    prefix: np.ndarray  # (m,) int64: index of the (n-1)-gram without the last token (order 1: -1)
    suffix: np.ndarray  # (m,) int64: index of the (n-1)-gram without the first token (order 1: -1)
    starts_with_bos: np.ndarray  # (m,) bool: the n-gram begins at the sentence start

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class NGramCounts:
    order: int
    vocab_size: int
    orders: list[OrderCounts]  # orders[n - 1] holds the n-grams

    def __getitem__(self, n: int) -> OrderCounts:
        return self.orders[n - 1]

    def sizes(self) -> list[int]:
        """N-grams per order, as an ARPA header counts them (every 1-gram but ``<pad>``)."""
        return [len(o) - (n == 0) for n, o in enumerate(self.orders)]


def flatten(seqs: Sequence[Sequence[int]], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate id sequences: ``(tokens, position)``, the position counted from each start.

    ::

        seqs       [2 5 6 3] [2 7 3]
        tokens      2 5 6 3   2 7 3
        position    0 1 2 3   0 1 2
    """
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    total = int(lengths.sum())
    tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=total)
    if total and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = int(tokens[(tokens < 0) | (tokens >= vocab_size)][0])
        raise ValueError(f"token id {bad} is outside the vocabulary (size {vocab_size})")
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(total, dtype=np.int64) - starts
    return tokens, position


def check_key_range(num_prefixes: int, vocab_size: int) -> None:
    if num_prefixes * vocab_size >= 2**62:
        raise OverflowError("too many n-grams for 64-bit trie keys")


def count_ngrams(seqs: Sequence[Sequence[int]], order: int, vocab_size: int) -> NGramCounts:
    """Count the 1- to ``order``-grams of id sequences (each one ``[<bos>, …, <eos>]``)."""
    if order < 1:
        raise ValueError("order must be >= 1")
    tokens, position = flatten(seqs, vocab_size)
    V = vocab_size
    predicted = position >= 1  # position 0 (<bos>) is context only

    # 1-grams: dense, indexed by token id.
    unigrams = OrderCounts(
        keys=np.arange(V, dtype=np.int64),
        counts=np.bincount(tokens[predicted], minlength=V).astype(np.int64),
        prefix=np.full(V, -1, dtype=np.int64),
        suffix=np.full(V, -1, dtype=np.int64),
        starts_with_bos=np.arange(V) == BOS_ID,
    )
    orders = [unigrams]
    # ending[p]: index of the (n-1)-gram that ends at position p (-1: the window leaves the sentence)
    ending = tokens.copy()
    for n in range(2, order + 1):
        at = np.flatnonzero(position >= n - 1)  # positions where an n-gram window fits
        check_key_range(len(orders[-1]), V)
        keys = ending[at - 1] * V + tokens[at]
        uniq, first, inverse, counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        where = at[first]  # one position where each distinct n-gram ends
        orders.append(
            OrderCounts(
                keys=uniq,
                counts=counts.astype(np.int64),
                prefix=uniq // V,
                suffix=ending[where],  # the (n-1)-gram ending at the same position
                starts_with_bos=tokens[where - (n - 1)] == BOS_ID,
            )
        )
        ending_next = np.full(len(tokens), -1, dtype=np.int64)
        ending_next[at] = inverse.reshape(-1)
        ending = ending_next
    return NGramCounts(order=order, vocab_size=V, orders=orders)
