import random

import torch

from model.text.batching import bptt_windows, length_sorted_batches, pad_batch, with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID


def test_targets_are_inputs_shifted_by_one():
    seqs = [with_boundaries(list(range(10, 10 + n))) for n in (3, 7, 12)]
    batch = pad_batch(seqs)  # (3, 14)
    windows = list(bptt_windows(batch, bptt=4))
    inputs = torch.cat([w[0] for w in windows], dim=1)
    targets = torch.cat([w[1] for w in windows], dim=1)
    assert torch.equal(inputs, batch[:, :-1])
    assert torch.equal(targets, batch[:, 1:])
    assert all(w[0].shape == w[1].shape and w[0].size(1) <= 4 for w in windows)
    assert len(windows) == 4  # 13 steps in windows of 4


def test_boundaries_and_padding():
    batch = pad_batch([with_boundaries([5, 6]), with_boundaries([7])])
    assert batch.tolist() == [[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]]


def test_length_sorted_batches_cover_everything_once():
    seqs = [[0] * random.Random(i).randint(1, 50) for i in range(103)]
    for rng in (None, random.Random(0)):
        batches = list(length_sorted_batches(seqs, 10, rng, pool_batches=3))
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(103))
        assert all(len(b) <= 10 for b in batches)
    plain = list(length_sorted_batches(seqs, 10))
    lengths = [len(seqs[i]) for b in plain for i in b]
    assert lengths == sorted(lengths)
