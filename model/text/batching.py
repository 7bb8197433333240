"""Sentence batches and truncated-BPTT windows.

Every sentence is its own sequence, ``<bos> w1 … wn <eos>``, scored from the model's start
state: exactly how ``/score`` and ``rnnlm evaluate`` use the model. Sentences of similar length
are batched together (little padding); a batch longer than the BPTT window is cut into windows
and the hidden state is carried, detached, from one window to the next::

    batch (B, L+1)   <bos> 厨 房 里 食 油 用 完 了 <eos> <pad> …
    window 1         inputs  = seq[:, 0:T]      targets = seq[:, 1:T+1]
    window 2         inputs  = seq[:, T:2T]     targets = seq[:, T+1:2T+1]   (state carried)

Targets are the inputs shifted by one; ``<pad>`` targets are ignored by the loss.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID


def with_boundaries(ids: Sequence[int], bos: bool = True, eos: bool = True) -> list[int]:
    return ([BOS_ID] if bos else []) + list(ids) + ([EOS_ID] if eos else [])


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> Tensor:
    """Right-pad id lists into a (B, max_len) LongTensor."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def length_sorted_batches(
    seqs: Sequence[Sequence[int]],
    batch_size: int,
    rng: random.Random | None = None,
    pool_batches: int = 50,
) -> Iterator[list[int]]:
    """Indices of ``seqs`` grouped into batches of similar length.

    With ``rng``: shuffle, sort within pools of ``pool_batches`` batches, shuffle the batches
    (random order, little padding). Without: one deterministic length-sorted pass.
    """
    order = list(range(len(seqs)))
    if rng is None:
        order.sort(key=lambda i: len(seqs[i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        rng.shuffle(order)
        pool = batch_size * pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: len(seqs[i]))
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
    yield from batches


def bptt_windows(batch: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, targets)`` windows of at most ``bptt`` steps over a (B, L) padded batch."""
    steps = batch.size(1) - 1
    for start in range(0, steps, bptt):
        end = min(start + bptt, steps)
        yield batch[:, start:end], batch[:, start + 1 : end + 1]
