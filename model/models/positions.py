"""Every position's alternatives: each token's log-prob and the most likely tokens where it
stands, from one pass over its sequence.

An echoed prompt with log-probs (OpenAI's ``echo`` + ``logprobs``, which lm-evaluation-harness
sends for every log-likelihood) asks, at each token, for its log-prob and the ``k`` most likely
tokens in its place. Asked as next-token questions, one per prefix, that is a prefix of every
length: work, and ids to build, growing with the square of the length. Here each sequence is
read once, and the distribution at each position gives both answers before it is dropped::

    sequence        <bos>   今     天     气
    distribution      ▼      ▼      ▼               after seq[:1], seq[:2], seq[:3]
    answers               今:-3.1 天:-0.4 气:-2.2    log P(seq[t] | seq[:t]) and the top k there

Only ``(rows, V)`` log-probs of one chunk exist at a time. A recurrent model (the RNN, the hybrid)
reads its sequences through the prefix tree of :mod:`model.models.prefix` and its own output layer
(``tree_output``): the explicit cells, so the same numbers, precision and batch invariance as
``/score``, and shared prefixes computed once. Any other model steps its own ``start_state`` /
``step`` over sequences of similar length together.

Entry point: :meth:`LanguageModel.position_alternatives <model.models.lm.LanguageModel.position_alternatives>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from model.models.prefix import (
    CHUNK_POSITIONS,
    MAX_LOGITS,
    StopCheck,
    TreeModel,
    _Checkpoints,
    build_tree,
    plan_depths,
    run_tree,
)
from model.text.tokenizer import PAD_ID

Alternatives = list[tuple[int, float]]  # (token id, log-prob), most likely first


class StepModel(Protocol):
    """Any model (a :class:`~model.models.lm.LanguageModel`), stepped a token at a time."""

    def start_state(self, batch_size: int) -> Any: ...
    def step(self, state: Any, ids: Tensor) -> tuple[Tensor, Any]: ...
    def select_state(self, state: Any, rows: Sequence[int] | Tensor) -> Any: ...


@dataclass
class PositionAlternatives:
    """One sequence's tokens after its first, as ``sequence_logprobs`` counts them."""

    token_logprobs: list[float]  # log P(seq[t] | seq[:t]) for t >= 1
    alternatives: list[Alternatives]  # the top k after seq[:t], for t >= 1


@dataclass
class PositionsResult:
    sequences: list[PositionAlternatives]
    computed: int  # positions fed through the model


def top_alternatives(logprobs: Tensor, k: int) -> list[Alternatives]:
    """The ``k`` most likely tokens of each row of ``logprobs`` (B, V), most likely first;
    impossible ones (log-prob -inf: ``<pad>``, ``<bos>``) left out."""
    if k <= 0:
        return [[] for _ in range(logprobs.size(0))]
    top = logprobs.float().topk(min(k, logprobs.size(-1)), dim=-1)  # (B, k)
    return [
        [(i, v) for i, v in zip(ids, values, strict=True) if math.isfinite(v)]
        for ids, values in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def _targets_and_top(logprobs: Tensor, targets: Tensor, k: int) -> tuple[list[float], list[Alternatives]]:
    """Row r of ``logprobs`` (R, V): the log-prob of ``targets[r]`` and the top ``k``."""
    picked = logprobs.gather(1, targets.view(-1, 1).to(logprobs.device)).view(-1)  # (R,)
    return picked.double().cpu().tolist(), top_alternatives(logprobs, k)


def alternatives_each(
    lm: StepModel,
    seqs: Sequence[Sequence[int]],
    top_k: int,
    *,
    should_stop: StopCheck | None = None,
    chunk_positions: int = CHUNK_POSITIONS,
    max_batch: int = 64,
    **_unused: object,
) -> PositionsResult:
    """Any model, a token at a time: sequences of similar length step together (longest first,
    so the rows still reading are always the first ones); ``should_stop`` is asked about every
    ``chunk_positions`` positions (True ends the pass with :class:`~model.models.prefix.PassStopped`)."""
    checkpoints = _Checkpoints(should_stop, chunk_positions)
    out = [PositionAlternatives([], []) for _ in seqs]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    computed = 0
    for start in range(0, len(order), max_batch):
        rows = [i for i in order[start : start + max_batch] if len(seqs[i]) > 1]
        if not rows:
            continue
        longest = len(seqs[rows[0]])
        ids = torch.full((len(rows), longest), PAD_ID, dtype=torch.long)  # (B, T)
        for r, i in enumerate(rows):
            ids[r, : len(seqs[i])] = torch.tensor(list(seqs[i]), dtype=torch.long)
        state = lm.start_state(len(rows))
        alive = len(rows)
        for t in range(longest - 1):
            reading = sum(1 for i in rows[:alive] if len(seqs[i]) > t + 1)  # a prefix of the rows
            if reading < alive:
                state = lm.select_state(state, list(range(reading)))
                alive = reading
            logprobs, state = lm.step(state, ids[:alive, t])  # (b, V)
            picked, top = _targets_and_top(logprobs, ids[:alive, t + 1], top_k)
            for r in range(alive):
                out[rows[r]].token_logprobs.append(picked[r])
                out[rows[r]].alternatives.append(top[r])
            computed += alive
            checkpoints.advance(alive)
    return PositionsResult(out, computed)


def alternatives_rnn_tree(
    lm: TreeModel,
    seqs: Sequence[Sequence[int]],
    top_k: int,
    *,
    should_stop: StopCheck | None = None,
    chunk_positions: int = CHUNK_POSITIONS,
    max_logits: int = MAX_LOGITS,
    share: bool = True,
    **_unused: object,
) -> PositionsResult:
    """A recurrent model: its sequences as one prefix tree (every distinct prefix computed once,
    depth by depth, as :func:`~model.models.prefix.score_rnn_tree` does), then its output layer chunk by
    chunk, each row's distribution giving its children's log-probs and its top ``top_k``."""
    net = lm.net
    checkpoints = _Checkpoints(should_stop, chunk_positions)
    tree = build_tree(seqs, (), share)
    plan = plan_depths(tree)
    if plan.num_rows == 0:  # no sequence has a token after its first
        return PositionsResult([PositionAlternatives([], []) for _ in seqs], 0)
    with torch.inference_mode():
        features, _ = run_tree(net, plan, (), checkpoints)  # (N, D): one row per node with a child
        output = lm.tree_output(tree, plan)  # the model's output layer (the hybrid's adds its n-gram)
        n_rows = plan.num_rows
        row_of_node = plan.row_of_node
        # the edges (node v, fed its parent's row) in row order: each row's children's tokens
        edges = sorted((row_of_node[p], v) for v, p in enumerate(tree.parent) if p >= 0)
        edge_lp: dict[int, float] = {}
        row_top: list[Alternatives] = []
        chunk = max(1, max_logits // lm.vocab_size)
        e = 0
        for a in range(0, n_rows, chunk):
            b = min(a + chunk, n_rows)
            logprobs = torch.log_softmax(output(features[a:b], a).float(), dim=-1)  # (c, V)
            lo = e
            while e < len(edges) and edges[e][0] < b:
                e += 1
            if e > lo:
                src = torch.tensor(
                    [row - a for row, _ in edges[lo:e]], dtype=torch.long, device=logprobs.device
                )
                tgt = torch.tensor(
                    [tree.token[v] for _, v in edges[lo:e]], dtype=torch.long, device=logprobs.device
                )
                picked = logprobs[src, tgt].double().cpu().tolist()
                edge_lp.update((v, lp) for (_, v), lp in zip(edges[lo:e], picked, strict=True))
            row_top += top_alternatives(logprobs, top_k)
            checkpoints.advance(b - a)
    out = []
    for path in tree.paths:
        out.append(
            PositionAlternatives(
                [edge_lp[v] for v in path[1:]],
                [row_top[row_of_node[p]] for p in path[:-1]],
            )
        )
    return PositionsResult(out, n_rows)
