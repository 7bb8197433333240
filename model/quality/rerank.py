"""Rerank confusion sets with any :class:`~model.models.lm.LanguageModel` and measure how often it is right.

A candidate's score is its total log-probability ``log P(<bos> c1 … cn <eos>)``, exactly what
``/score`` returns by default, so the benchmark measures what a recognizer calling the service
gets. Per item::

    top-1  = 1 if the original scores strictly best, 1/(t+1) if it ties with t others at the top
    RR     = 1 / rank of the original (averaged over the ranks a tie allows)

Ties are split as a random tie-break would on average, so a model that cannot tell candidates
apart (a unigram model on a word-order set) scores chance, not 0 or 1. Accuracy and MRR are
means over items, each with a 95% percentile-bootstrap interval over items (seeded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.models.lm import LanguageModel
from model.models.prefix import score_tree
from model.quality.confusion import HomophoneIndex, RerankItem, build_set, save_items
from model.quality.english_sets import ENGLISH_KINDS, build_english_set
from model.text.batching import with_boundaries

TIE_TOLERANCE = 1e-6  # nats: scores closer than this are treated as equal


def candidate_logprobs(
    lm: LanguageModel, items: Sequence[RerankItem], chunk: int = 512
) -> list[list[torch.Tensor]]:
    """Per item, per candidate: the log-prob of every token after ``<bos>`` (``<eos>`` last)."""
    flat = [c for item in items for c in item.candidates]
    seqs = [with_boundaries(lm.tokenizer.encode(c).ids) for c in flat]
    scores: list[torch.Tensor] = []
    for start in range(0, len(seqs), chunk):
        # Candidates of one item share the prefix before their edit: compute it once.
        scores += score_tree(lm, seqs[start : start + chunk]).logprobs
    out, k = [], 0
    for item in items:
        out.append(scores[k : k + len(item.candidates)])
        k += len(item.candidates)
    return out


def rank_credit(scores: Sequence[float], answer: int, tol: float = TIE_TOLERANCE) -> tuple[float, float]:
    """``(top-1 credit, expected reciprocal rank)`` of ``scores[answer]``, ties split evenly."""
    s = np.asarray(scores, dtype=np.float64)
    target = s[answer]
    better = int(np.sum(s > target + tol))
    tied = int(np.sum(np.abs(s - target) <= tol)) - 1
    ranks = np.arange(better + 1, better + tied + 2)
    top1 = 1.0 / (tied + 1) if better == 0 else 0.0
    return top1, float(np.mean(1.0 / ranks))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (resampling items)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass
class RerankResult:
    """What one model made of one set: every candidate's score and each item's credit."""

    scores: list[list[float]]  # per item, per candidate: total log-prob (nats)
    top1: list[float]  # per item
    reciprocal_rank: list[float]  # per item
    seconds: float = 0.0  # wall time of scoring

    @classmethod
    def from_scores(
        cls, items: Sequence[RerankItem], scores: list[list[float]], seconds: float = 0.0
    ) -> RerankResult:
        credits = [rank_credit(s, item.answer) for item, s in zip(items, scores, strict=True)]
        return cls(
            scores=scores,
            top1=[c[0] for c in credits],
            reciprocal_rank=[c[1] for c in credits],
            seconds=seconds,
        )

    def summary(self, seed: int = 0) -> dict:
        return {
            "items": len(self.top1),
            "top1": float(np.mean(self.top1)) if self.top1 else float("nan"),
            "top1_ci95": bootstrap_ci(self.top1, seed),
            "mrr": float(np.mean(self.reciprocal_rank)) if self.reciprocal_rank else float("nan"),
            "mrr_ci95": bootstrap_ci(self.reciprocal_rank, seed),
            "chance_top1": float(np.mean([1 / len(s) for s in self.scores])) if self.scores else float("nan"),
            "seconds": round(self.seconds, 3),
        }


def rerank(lm: LanguageModel, items: Sequence[RerankItem]) -> tuple[RerankResult, list[list[torch.Tensor]]]:
    """Score every candidate of every item; the result and the per-token log-probs behind it."""
    t0 = time.perf_counter()
    per_token = candidate_logprobs(lm, items)
    seconds = time.perf_counter() - t0
    scores = [[float(t.sum()) for t in cands] for cands in per_token]
    return RerankResult.from_scores(items, scores, seconds), per_token


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict:
    """Mean of ``a - b`` over the same items, with its bootstrap interval (is A better than B?)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return {"mean": float(diff.mean()), "ci95": bootstrap_ci(diff, seed)}


# -- the benchmark as the CLI runs it ----------------------------------------------------------
@dataclass
class SetSpec:
    """How a confusion set is drawn; the same spec always gives the same set."""

    kind: str = "homophone"  # "homophone" or "wordorder" (Chinese); "realword" or "wordswap" (English)
    split: str = "test"  # held-out split the sentences come from
    size: int = 500  # items
    distractors: int = 5  # per item (candidates = distractors + 1)
    seed: int = 0
    min_len: int = 8  # sentence length bounds, in characters (English sets: in words)
    max_len: int = 60
    min_count: int = 20  # homophones: a replacement character's minimum train count

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.split}-n{self.size}-d{self.distractors}-s{self.seed}"

    def cli_flags(self) -> str:
        """The ``rnnlm benchmark rerank`` options that draw this set (those not at their default)."""
        default = SetSpec()
        names = ("size", "distractors", "seed", "min_len", "max_len", "min_count")
        return "".join(
            f" --{n.replace('_', '-')} {getattr(self, n)}"
            for n in names
            if getattr(self, n) != getattr(default, n)
        )


def homophone_index(data_dir: str | Path, min_count: int, cache_dir: str | Path | None) -> HomophoneIndex:
    """Reading counts of the train split, cached per train checksum and pypinyin version."""
    import pypinyin

    from model.text.data import load_split, sha256_file

    cache = None
    if cache_dir is not None:
        key = f"{sha256_file(Path(data_dir) / 'train.txt')[:16]}-pypinyin{pypinyin.__version__}"
        cache = Path(cache_dir) / f"readings-{key}.json"
        if cache.exists():
            return HomophoneIndex(json.loads(cache.read_text(encoding="utf-8")), min_count)
    counts = HomophoneIndex.count_readings(load_split(data_dir, "train"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(counts, ensure_ascii=False), encoding="utf-8")
        tmp.replace(cache)
    return HomophoneIndex(counts, min_count)


def build_and_save_set(
    data_dir: str | Path, spec: SetSpec, out_dir: str | Path | None = "runs/rerank"
) -> tuple[list[RerankItem], Path | None]:
    """Build the set of ``spec`` from ``data_dir``; save it as ``out_dir/<name>.jsonl`` if given."""
    from model.text.data import load_split

    if spec.kind in ENGLISH_KINDS:
        vocab = {t for line in load_split(data_dir, "train") for t in line.split()}
        items = build_english_set(
            spec.kind,
            load_split(data_dir, spec.split),
            vocab=vocab,
            size=spec.size,
            distractors=spec.distractors,
            seed=spec.seed,
            min_len=spec.min_len,
            max_len=spec.max_len,
            split=spec.split,
        )
        path = save_items(Path(out_dir) / f"{spec.name}.jsonl", items) if out_dir is not None else None
        return items, path
    index = homophone_index(data_dir, spec.min_count, out_dir) if spec.kind == "homophone" else None
    items = build_set(
        spec.kind,
        load_split(data_dir, spec.split),
        index,
        size=spec.size,
        distractors=spec.distractors,
        seed=spec.seed,
        min_len=spec.min_len,
        max_len=spec.max_len,
        split=spec.split,
    )
    path = save_items(Path(out_dir) / f"{spec.name}.jsonl", items) if out_dir is not None else None
    return items, path
