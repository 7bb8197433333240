"""The linear-chain CRF (model/heads/crf.py) against brute force on tiny sizes: log Z, the score
of a path, the Viterbi path, with padding and constraints; gradients stay finite."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.heads.crf import FORBIDDEN, LinearChainCRF, viterbi

TOL = 1e-4


def random_crf(labels: int, seed: int, constrained: bool) -> LinearChainCRF:
    g = torch.Generator().manual_seed(seed)
    allowed = start = end = None
    if constrained:
        allowed = torch.rand(labels, labels, generator=g) > 0.4
        allowed[:, 0] = True  # every label can be followed by something, and label 0 reached
        allowed[0, :] = True
        start = torch.rand(labels, generator=g) > 0.5
        end = torch.rand(labels, generator=g) > 0.5
        start[0] = end[0] = True
    crf = LinearChainCRF(labels, allowed, start, end)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return crf


def brute_force(crf: LinearChainCRF, emissions: torch.Tensor, n: int) -> dict[tuple[int, ...], float]:
    transitions, start, end = crf.scores()
    out = {}
    for path in itertools.product(range(emissions.size(1)), repeat=n):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(n))
        s = s + sum(transitions[path[t - 1], path[t]] for t in range(1, n))
        out[path] = float(s)
    return out


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_partition_score_and_viterbi_match_brute_force(seed, constrained):
    labels, lengths = 3, [4, 1, 3, 2]
    crf = random_crf(labels, seed, constrained)
    g = torch.Generator().manual_seed(100 + seed)
    emissions = torch.randn(len(lengths), max(lengths), labels, generator=g)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        decoded = crf.decode(emissions, mask)
        for b, n in enumerate(lengths):
            scores = brute_force(crf, emissions[b], n)
            expected = torch.logsumexp(torch.tensor(list(scores.values())), 0)
            assert float(log_z[b]) == pytest.approx(float(expected), abs=TOL)
            best = max(scores, key=scores.__getitem__)
            assert tuple(decoded[b]) == best and len(decoded[b]) == n
            path = torch.tensor([*best, *[labels - 1] * (max(lengths) - n)])  # padding: any label
            row_score = crf.path_score(emissions[b : b + 1], path.unsqueeze(0), mask[b : b + 1])
            assert float(row_score) == pytest.approx(scores[best], abs=TOL)


def test_a_forbidden_path_is_never_decoded_and_the_nll_is_a_probability():
    crf = random_crf(4, 3, constrained=True)
    g = torch.Generator().manual_seed(7)
    emissions = torch.randn(6, 5, 4, generator=g) * 5
    mask = torch.ones(6, 5, dtype=torch.bool)
    transitions, start, end = crf.scores()
    for path in crf.decode(emissions, mask):
        assert start[path[0]] > FORBIDDEN / 2 and end[path[-1]] > FORBIDDEN / 2
        assert all(transitions[a, b] > FORBIDDEN / 2 for a, b in itertools.pairwise(path))
    labels = torch.tensor(crf.decode(emissions, mask))
    nll = crf.nll(emissions, labels, mask)
    assert (nll >= -TOL).all()  # p(y|x) <= 1


def test_gradients_are_finite_even_for_a_forbidden_gold_path():
    crf = random_crf(3, 0, constrained=True)
    emissions = torch.randn(2, 4, 3, requires_grad=True)
    labels = torch.tensor([[1, 1, 1, 1], [2, 2, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    crf.nll(emissions, labels, mask).sum().backward()
    assert torch.isfinite(emissions.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in crf.parameters())
    assert emissions.grad[1, 2:].abs().max() == 0  # padding gets no gradient


def test_viterbi_without_transitions_is_the_per_position_argmax():
    emissions = torch.randn(3, 5, 4)
    mask = torch.arange(5) < torch.tensor([[5], [2], [1]])
    zeros = torch.zeros(4)
    paths = viterbi(emissions, mask, torch.zeros(4, 4), zeros, zeros)
    for b, path in enumerate(paths):
        assert path == emissions[b, : len(path)].argmax(1).tolist()
    assert [len(p) for p in paths] == [5, 2, 1]
    assert viterbi(
        torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), torch.zeros(4, 4), zeros, zeros
    ) == [[], []]
