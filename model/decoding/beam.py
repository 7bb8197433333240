"""Beam search over a word graph with the language model in the loop.

Rescoring an n-best list can only reorder what the first pass kept; searching the first pass's
confusion network or lattice with the model lets it build sentences the first pass never wrote.
A path's total is the rescoring formula (:func:`model.inference.scoring.combine_scores`)::

    total = Σ arc scores + lm_weight × log P_LM(<bos> text <eos>) + length_bonus × tokens

How the search runs (levels of the graph, :meth:`WordGraph.levels`; a confusion network's level k
is its slot k)::

    level k:   hypotheses waiting at its nodes (each: history, score, the state it came from)
      1. recombine  hypotheses of a node with the same recombination key keep the best one
      2. prune      the ``beam`` best per node (and those within ``beam_threshold`` of the best)
      3. step       ONE batched ``lm.step`` feeds every survivor its last token -> (H, V) log-probs
      4. expand     every survivor × every arc leaving its node (the ``max_arcs`` best-scored):
                    the word's first token is read off the survivor's row; a word of several
                    tokens (a char model reading 你好) is fed token by token, one batched step per
                    token for all such expansions; an epsilon arc passes the hypothesis on as is.
    the end node:  every hypothesis that reaches it (recombined, not cut to the beam) gets
                   + lm_weight × log P(<eos>); the ``nbest`` best paths come out.

Feeding a word's last token waits until its hypothesis survives pruning at the node it enters,
so the model only ever steps hypotheses that are kept.

**Recombination.** Two hypotheses at one node whose futures the model scores identically can be
merged: only the better one can lead to the best path. An n-gram of order n looks at the last
n-1 tokens, so histories that end alike merge (Viterbi over n-gram contexts). An RNN's state
depends on the whole history, so for an exact RNN (and the hybrid, whose RNN part does) only
identical token histories merge: two segmentations of one text, or a deletion met at different
slots. That also keeps the n best texts distinct. How far a model looks back is
:func:`context_width`. Merging by n-gram context keeps the best path exact; the 2nd..nth paths
are then the best of their contexts, not necessarily the next-best sentences.

**Exactness.** The search's own sums (one float32 step at a time) order the beam; the n best
paths are then scored once more, each on its own, by
:func:`~model.inference.scoring.score_candidates`, the function behind ``/score``, so each
returned ``lm_logprob`` is exactly what it says of the text alone (``<bos>`` … ``<eos>``, ``<eos>``
counted), and the list is ordered by those exact totals. The search's sums agree with them to
float32 rounding (about 1e-6 per sentence).

**Cost.** :func:`search_cost` bounds, before the search, its work in model rows stepped (its
batched steps, expansions and the final rescoring counted in rows too): what a server checks
against its budget so that no request holds the model for long. ``should_stop`` (checked between levels) ends a search nobody
waits for with :class:`~model.models.prefix.PassStopped`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.decoding.graph import WordGraph
from model.inference.scoring import ScoreOptions, rank, score_candidates
from model.models.lm import LanguageModel, State
from model.models.prefix import PassStopped
from model.text.tokenizer import BOS_ID, EOS_ID


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 16  # hypotheses kept per node (per slot of a confusion network)
    nbest: int = 1  # paths returned, best first
    lm_weight: float = 1.0  # weight of the model's log-prob in the total
    length_bonus: float = 0.0  # added per token of the model (a word-insertion bonus; < 0: a penalty)
    max_arcs: int = 0  # per-slot pruning: only the K best-scored arcs leaving a node (0: all)
    beam_threshold: float = math.inf  # drop hypotheses this far below their node's best (inf: off)
    recombine: bool = True  # merge hypotheses the model cannot tell apart (see the module doc)

    def __post_init__(self) -> None:
        if self.beam < 1 or self.nbest < 1:
            raise ValueError("beam and nbest must be at least 1")
        if self.nbest > self.beam:
            raise ValueError(f"nbest ({self.nbest}) must not exceed beam ({self.beam})")
        if self.max_arcs < 0:
            raise ValueError(f"max_arcs must be 0 (all) or more, got {self.max_arcs}")
        for name in ("lm_weight", "length_bonus"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if not self.beam_threshold > 0:
            raise ValueError(f"beam_threshold must be positive, got {self.beam_threshold}")


@dataclass
class DecodedPath:
    text: str  # the words joined as the tokenizer joins pieces
    words: list[str]  # the non-empty words of the path, in order
    score: float  # the total (exact): acoustic + lm_weight × lm_logprob + length_bonus × num_tokens
    lm_logprob: float  # what /score gives the text (<bos> … <eos>, <eos> counted)
    acoustic: float  # the sum of the path's arc scores
    num_tokens: int  # the model's tokens of the text (no <bos>/<eos>): what length_bonus multiplies
    search_lm_logprob: float = 0.0  # the same log-prob as the search summed it, step by step


@dataclass
class DecodeStats:
    steps: int = 0  # batched lm.step calls
    stepped_rows: int = 0  # rows fed through them
    merged: int = 0  # hypotheses recombined into a better one
    expansions: int = 0  # (hypothesis, arc) pairs scored


def context_width(lm: LanguageModel) -> int | None:
    """How many past tokens ``lm``'s next-token distribution depends on (its
    :meth:`~model.models.lm.LanguageModel.context_width`: an n-gram ``order - 1``, None for an RNN,
    which is always exact). Used only to merge hypotheses."""
    return lm.context_width()


# -- hypotheses ----------------------------------------------------------------------------------------
@dataclass
class _Hyp:
    ids: tuple[int, ...]  # token history after <bos> (the pending token included)
    words: tuple[str, ...]
    score: float  # total so far: acoustic + lm_weight × lm + length_bonus × tokens
    acoustic: float
    lm: float  # the model's log-prob so far (search sums)
    source: tuple[int, int]  # (batch, row): the state (and log-probs) it continues from
    pending: int | None = None  # a token still to feed to that state (None: the state is current)


@dataclass
class _Batches:
    """The (log-probs, state) of every batched step of one search, by number."""

    logprobs: list[Tensor] = field(default_factory=list)  # (B_i, V) each
    states: list[State] = field(default_factory=list)

    def add(self, logprobs: Tensor, state: State) -> int:
        self.logprobs.append(logprobs.float().cpu())
        self.states.append(state)
        return len(self.states) - 1

    def gather(self, lm: LanguageModel, sources: list[tuple[int, int]]) -> State:
        """One state of the rows ``sources`` (batch, row), in that order."""
        order = sorted(range(len(sources)), key=lambda i: sources[i])
        parts: list[State] = []
        rows_of: dict[int, list[int]] = {}
        for i in order:
            rows_of.setdefault(sources[i][0], []).append(sources[i][1])
        for b, rows in rows_of.items():
            parts.append(lm.select_state(self.states[b], rows))
        state = parts[0] if len(parts) == 1 else lm.concat_states(parts)
        inverse = [0] * len(sources)
        for place, i in enumerate(order):
            inverse[i] = place
        return lm.select_state(state, inverse) if inverse != list(range(len(sources))) else state

    def logprob(self, sources: list[tuple[int, int]], tokens: list[int]) -> list[float]:
        """log P(token | the state at source) for each pair."""
        out = [0.0] * len(sources)
        by_batch: dict[int, list[int]] = {}
        for i, (b, _) in enumerate(sources):
            by_batch.setdefault(b, []).append(i)
        for b, items in by_batch.items():
            rows = torch.tensor([sources[i][1] for i in items])
            cols = torch.tensor([tokens[i] for i in items])
            for i, v in zip(items, self.logprobs[b][rows, cols].tolist(), strict=True):
                out[i] = v
        return out


# -- the search ----------------------------------------------------------------------------------------
def decode_graph(
    lm: LanguageModel,
    graph: WordGraph,
    options: DecodeOptions | None = None,
    stats: DecodeStats | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[DecodedPath]:
    """The ``options.nbest`` best paths through ``graph`` under ``lm``, best first (see the module doc).
    ``should_stop``, if given, is asked before each level; True ends the search (PassStopped)."""
    opts = options or DecodeOptions()
    stats = stats if stats is not None else DecodeStats()
    tokenizer = lm.tokenizer
    if tokenizer.backward:
        raise ValueError("decoding reads left to right: it needs a forward model, not a backward one")
    width = context_width(lm) if opts.recombine else None
    encode = _word_encoder(tokenizer.encode)
    batches = _Batches()

    with torch.inference_mode():
        logp, state = lm.step(lm.start_state(1), torch.tensor([BOS_ID]))  # (1, V)
        stats.steps += 1
        stats.stepped_rows += 1
        waiting: dict[int, list[_Hyp]] = {
            graph.start: [_Hyp((), (), 0.0, 0.0, 0.0, (batches.add(logp, state), 0))]
        }
        finals: list[_Hyp] = []
        for level in graph.levels():
            if should_stop is not None and should_stop():
                raise PassStopped("the search was stopped between two levels")
            # The end node keeps every (recombined) hypothesis: <eos> may still reorder them.
            kept = {n: _prune(waiting.pop(n, []), opts, width, stats, n == graph.end) for n in level}
            live = [h for n in level for h in kept[n]]
            if not live:
                continue
            _catch_up(lm, batches, live, stats)
            if graph.end in kept:
                finals = kept[graph.end]
            _expand(lm, graph, kept, encode, opts, batches, waiting, stats)
    if not finals:
        raise ValueError("no hypothesis reached the end node (every path was pruned)")
    eos = batches.logprob([h.source for h in finals], [EOS_ID] * len(finals))
    for h, lp in zip(finals, eos, strict=True):
        h.lm += lp
        h.score += opts.lm_weight * lp
    finals.sort(key=lambda h: -h.score)
    return _exact(lm, finals[: opts.nbest], opts)


# The search's costs in model rows stepped (one token fed to one hypothesis), measured on one CPU
# core with the hybrid model (a row about 0.22 ms, a batched step 5 ms before its rows, a path's
# exact rescoring 20 ms and 1 ms a token: it is scored alone, token after token).
EXPANSIONS_PER_ROW = 16  # (hypothesis, arc) pairs scored
ROWS_PER_STEP = 24  # a batched lm.step call, whatever its rows
ROWS_PER_PATH = 96  # rescoring one of the n best paths on its own (score_candidates)
ROWS_PER_PATH_TOKEN = 5  # and each of its tokens


def search_cost(lm: LanguageModel, graph: WordGraph, options: DecodeOptions) -> int:
    """An upper bound on the work of :func:`decode_graph` on ``graph``, in model rows stepped
    (the constants above), before any of it: what a server checks against its budget so that no
    request holds the model for long. It counts

    * ``beam`` rows per node to catch its survivors up (at the end node, ``beam`` per arc entering
      it: the end keeps every recombined hypothesis), and ``<bos>``;
    * ``beam`` × (tokens - 1) rows per arc (a word of several tokens is fed token by token);
    * a batched step per node, and one per token after a word's first (the longest word of a node);
    * ``beam`` expansions per arc;
    * the ``nbest`` paths rescored, each at most the longest path's tokens, ``<bos>`` and ``<eos>``.

    Words are tokenized as the search will (``lm``'s tokenizer). ValueError as
    :meth:`WordGraph.levels` for a graph with no path or a cycle."""
    tokens = _word_encoder(lm.tokenizer.encode)
    alive = {node for level in graph.levels() for node in level}
    beam = options.beam
    rows, steps, expansions, longest = 1, 1, 0, 0
    entering_end = sum(1 for arc in graph.arcs if arc.dst == graph.end and arc.src in alive)
    for node in alive:
        arcs = graph.live_arcs(node, options.max_arcs)
        counts = [len(tokens(arc.word)) for arc in arcs]
        rows += beam * entering_end if node == graph.end else beam
        rows += beam * sum(max(0, n - 1) for n in counts)
        steps += max([1, *counts])
        expansions += beam * len(arcs)
        longest += max(counts, default=0)
    paths = options.nbest * (ROWS_PER_PATH + ROWS_PER_PATH_TOKEN * (longest + 2))
    return rows + ROWS_PER_STEP * steps + -(-expansions // EXPANSIONS_PER_ROW) + paths


def _word_encoder(encode: Callable) -> Callable[[str], list[int]]:
    cache: dict[str, list[int]] = {}

    def ids(word: str) -> list[int]:
        if word not in cache:
            cache[word] = encode(word).ids if word else []
        return cache[word]

    return ids


def _key(h: _Hyp, width: int | None) -> tuple[int, ...]:
    if width is None:
        return h.ids
    return (BOS_ID, *h.ids)[-width:] if width else ()


def _prune(
    hyps: list[_Hyp], opts: DecodeOptions, width: int | None, stats: DecodeStats, at_end: bool = False
) -> list[_Hyp]:
    """Recombine (the best of each key, or of each identical history), then the beam (not at the end)."""
    if opts.recombine:
        best: dict[tuple[int, ...], _Hyp] = {}
        for h in hyps:
            key = _key(h, width)
            other = best.get(key)
            if other is None or h.score > other.score:
                best[key] = h
        stats.merged += len(hyps) - len(best)
        hyps = list(best.values())
    kept = sorted(hyps, key=lambda h: -h.score)
    if at_end:
        return kept
    kept = kept[: opts.beam]
    if kept and math.isfinite(opts.beam_threshold):
        floor = kept[0].score - opts.beam_threshold
        kept = [h for h in kept if h.score >= floor]
    return kept


def _catch_up(lm: LanguageModel, batches: _Batches, hyps: list[_Hyp], stats: DecodeStats) -> None:
    """Feed every hypothesis its pending token in one batched step."""
    todo = [h for h in hyps if h.pending is not None]
    if not todo:
        return
    state = batches.gather(lm, [h.source for h in todo])
    logp, state = lm.step(state, torch.tensor([h.pending for h in todo]))  # (B, V)
    stats.steps += 1
    stats.stepped_rows += len(todo)
    b = batches.add(logp, state)
    for row, h in enumerate(todo):
        h.source, h.pending = (b, row), None


def _expand(
    lm: LanguageModel,
    graph: WordGraph,
    kept: dict[int, list[_Hyp]],
    encode: Callable[[str], list[int]],
    opts: DecodeOptions,
    batches: _Batches,
    waiting: dict[int, list[_Hyp]],
    stats: DecodeStats,
) -> None:
    """Every kept hypothesis along every live arc of its node, into ``waiting`` at the arc's end."""
    words: list[tuple[_Hyp, int, str, float, list[int]]] = []  # (hyp, dst, word, arc score, ids)
    for node, hyps in kept.items():
        for arc in graph.live_arcs(node, opts.max_arcs):
            ids = encode(arc.word)
            for h in hyps:
                stats.expansions += 1
                if not ids:  # epsilon: the hypothesis passes on unchanged
                    moved = _Hyp(h.ids, h.words, h.score + arc.score, h.acoustic + arc.score, h.lm, h.source)
                    waiting.setdefault(arc.dst, []).append(moved)
                else:
                    words.append((h, arc.dst, arc.word, arc.score, ids))
    # Token by token: every expansion reads its j-th token from its current source; those with a
    # token after that are stepped together, one batched call per j.
    sources = [h.source for h, *_ in words]
    lms = [0.0] * len(words)
    j = 0
    active = list(range(len(words)))
    while active:
        lps = batches.logprob([sources[i] for i in active], [words[i][4][j] for i in active])
        for i, lp in zip(active, lps, strict=True):
            lms[i] += lp
        going = [i for i in active if len(words[i][4]) > j + 1]
        if going:
            state = batches.gather(lm, [sources[i] for i in going])
            logp, state = lm.step(state, torch.tensor([words[i][4][j] for i in going]))
            stats.steps += 1
            stats.stepped_rows += len(going)
            b = batches.add(logp, state)
            for row, i in enumerate(going):
                sources[i] = (b, row)
        active, j = going, j + 1
    for (h, dst, word, arc_score, ids), source, lm_sum in zip(words, sources, lms, strict=True):
        score = h.score + arc_score + opts.lm_weight * lm_sum + opts.length_bonus * len(ids)
        new = _Hyp(
            h.ids + tuple(ids),
            (*h.words, word),
            score,
            h.acoustic + arc_score,
            h.lm + lm_sum,
            source,
            ids[-1],
        )
        waiting.setdefault(dst, []).append(new)


def _exact(lm: LanguageModel, hyps: list[_Hyp], opts: DecodeOptions) -> list[DecodedPath]:
    """The paths scored by ``score_candidates`` (what /score computes), best first.

    Each text is scored on its own: a padded batch's float32 sums depend (in the last bits) on
    what else is in the batch, and a path's score should be what /score says of it alone."""
    joiner = lm.tokenizer.joiner
    score_opts = ScoreOptions(lm_weight=opts.lm_weight, length_bonus=opts.length_bonus, length_unit="tokens")
    paths = []
    for h in hyps:
        r = score_candidates(lm, [joiner.join(h.words)], score_opts, external_scores=[h.acoustic]).results[0]
        paths.append(
            DecodedPath(
                text=r.text,
                words=list(h.words),
                score=r.score,
                lm_logprob=r.logprob,
                acoustic=h.acoustic,
                num_tokens=r.length,
                search_lm_logprob=h.lm,
            )
        )
    order = rank([p.score for p in paths])
    return [paths[i] for i in order]
