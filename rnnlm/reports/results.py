"""``docs/RESULTS.md``: every model of the project measured the same way, by one command.

::

    rnnlm benchmark quality --data data/pd98 --out docs/RESULTS.md

For each model (the n-gram baselines, built once and cached under ``runs/ngram/``; every RNN
checkpoint in ``weights/``; each RNN combined with the KN 5-gram) the command measures, in one run:

* test perplexity and bits per character, per sentence with ``<eos>`` counted and OOVs
  included (what ``rnnlm evaluate`` prints),
* top-1 accuracy and MRR on the homophone and word-order sets of ``rnnlm benchmark rerank``
  (same defaults, same seed),
* size on disk and training time (from the checkpoint's ``metrics.json``),

and writes the table, the error analysis of the best RNN against the KN 5-gram, and the command
behind every row. Every model is run once per text; combinations are computed from the
components' per-token log-probs (:mod:`model.quality.combine`), which is exactly what a
mixture checkpoint computes. Published figures are quoted in their own table.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.models.lm import LanguageModel
from model.quality.analysis import edit_width, frequency_profile, pairs_of, position_profile
from model.quality.combine import loglinear_logprobs, mix_logprobs, sentence_scores, tune_loglinear_weight
from model.quality.confusion import RerankItem
from model.quality.rerank import (
    RerankResult,
    SetSpec,
    build_and_save_set,
    candidate_logprobs,
    paired_difference,
)
from model.text.batching import with_boundaries
from model.text.data import load_split, sha256_file, write_text_atomically

from .blocks import carried_blocks
from .results_markdown import render_markdown

SET_KINDS = ("homophone", "wordorder")
LogProbs = list[torch.Tensor]
Log = Callable[[str], None]


@dataclass
class NGramSpec:
    label: str  # row name
    order: int
    smoothing: str  # addk | interp | katz | kn

    def slug(self, data_dir: str | Path) -> str:
        return f"{Path(data_dir).name}-char-{self.smoothing}{self.order}"


NGRAM_BASELINES = [
    NGramSpec("unigram", 1, "kn"),
    NGramSpec("add-k 3-gram", 3, "addk"),
    NGramSpec("interpolated 5-gram", 5, "interp"),
    NGramSpec("Katz backoff 5-gram", 5, "katz"),
    NGramSpec("Kneser-Ney 3-gram", 3, "kn"),
    NGramSpec("Kneser-Ney 5-gram", 5, "kn"),
]
REFERENCE = "Kneser-Ney 5-gram"  # what the RNNs are combined with and compared against


# -- scores: everything a row needs, as per-token log-probs ------------------------------------------
@dataclass
class Scores:
    test: LogProbs  # one tensor per test line (<eos> included)
    valid: LogProbs | None  # the same for valid (tunes mixture weights), when needed
    sets: dict[str, list[LogProbs]]  # "<kind>-<split>" -> per item, per candidate

    def map(self, other: Scores, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Scores:
        """Combine two models' scores token by token (both must cover the same texts)."""
        return Scores(
            test=[fn(a, b) for a, b in zip(self.test, other.test, strict=True)],
            valid=None
            if self.valid is None or other.valid is None
            else [fn(a, b) for a, b in zip(self.valid, other.valid, strict=True)],
            sets={
                k: [
                    [fn(a, b) for a, b in zip(ca, cb, strict=True)]
                    for ca, cb in zip(self.sets[k], other.sets[k], strict=True)
                ]
                for k in self.sets
            },
        )


def score_lines(lm: LanguageModel, lines: Sequence[str], batch_lines: int = 256) -> LogProbs:
    seqs = [with_boundaries(lm.tokenizer.encode(line).ids) for line in lines]
    out: LogProbs = []
    for start in range(0, len(seqs), batch_lines):
        out += [t.double() for t in lm.sequence_logprobs(seqs[start : start + batch_lines])]
    return out


def collect_scores(
    lm: LanguageModel, test: Sequence[str], valid: Sequence[str] | None, sets: dict[str, list[RerankItem]]
) -> Scores:
    return Scores(
        test=score_lines(lm, test),
        valid=None if valid is None else score_lines(lm, valid),
        sets={
            key: [[t.double() for t in c] for c in candidate_logprobs(lm, items)]
            for key, items in sets.items()
        },
    )


def perplexity_of(logprobs: LogProbs, lines: Sequence[str]) -> tuple[float, float]:
    """``(perplexity, bits per character)``, computed as :func:`model.models.evaluate.evaluate_lines` does."""
    total = sum(float(t.sum()) for t in logprobs)
    tokens = sum(len(t) for t in logprobs)
    chars = sum(len(line) + 1 for line in lines)
    return math.exp(-total / max(tokens, 1)), -total / math.log(2) / max(chars, 1)


def set_results(
    sets: dict[str, list[RerankItem]], per_token: dict[str, list[LogProbs]], split: str = "test"
) -> dict[str, RerankResult]:
    """Rerank results per set kind: each candidate's score is the sum of its per-token scores."""
    keys = {kind: f"{kind}-{split}" for kind in SET_KINDS}
    return {
        kind: RerankResult.from_scores(sets[key], sentence_scores(per_token[key]))
        for kind, key in keys.items()
    }


# -- rows --------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    family: str  # "n-gram", "RNN", "RNN + n-gram"
    perplexity: float | None  # None: not a normalized model
    bits_per_char: float | None
    rerank: dict[str, RerankResult]
    size_bytes: int | None = None
    train_time_s: float | None = None
    command: str = ""
    note: str = ""
    scores: Scores | None = field(default=None, repr=False)
    vocabulary: tuple[str, ...] = field(default=(), repr=False)  # combinations need the same one

    def summary(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "size_bytes": self.size_bytes,
            "train_time_s": self.train_time_s,
            "command": self.command,
            "note": self.note,
            **{kind: r.summary() for kind, r in self.rerank.items()},
        }


def scores_of(row: Row) -> Scores:
    """The per-token scores of a measured row (:func:`measure_model` and the combinations keep them)."""
    assert row.scores is not None, f"{row.name} has no scores"
    return row.scores


def dir_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def ensure_ngram(spec: NGramSpec, data_dir: str | Path, cache_dir: str | Path, log: Log) -> Path:
    """The checkpoint of ``spec`` under ``cache_dir``, trained now unless one for this train split exists."""
    from model.models.checkpoint import CheckpointError, read_json
    from model.training.ngram import NGramJob, train_ngram

    out = Path(cache_dir) / spec.slug(data_dir)
    train_sha = sha256_file(Path(data_dir) / "train.txt")
    try:
        metrics = read_json(out / "metrics.json")
        if metrics.get("data", {}).get("sha256", {}).get("train") == train_sha:
            return out
        log(f"{out}: built from other data; rebuilding")
    except CheckpointError:
        pass
    command = (
        f"rnnlm train-ngram --data {data_dir} --out {out} --order {spec.order} --smoothing {spec.smoothing}"
    )
    log(f"building {spec.label}: {command}")
    train_ngram(
        NGramJob(
            data_dir=str(data_dir),
            out_dir=str(out),
            order=spec.order,
            smoothing=spec.smoothing,
            command=command,
        ),
        log=lambda line: log("  " + line),
    )
    return out


NEURAL_FAMILIES = {"window": "fixed-window neural", "rnn": "RNN", "hybrid": "RNN + n-gram, one model"}


def rnn_dirs(weights_dir: str | Path, kinds: Sequence[str] = ("rnn",)) -> list[Path]:
    """Every checkpoint of the given kinds directly under ``weights_dir``."""
    from model.models.checkpoint import CheckpointError, read_config

    found = []
    for d in sorted(Path(weights_dir).iterdir()) if Path(weights_dir).is_dir() else []:
        try:
            if d.is_dir() and not d.name.startswith(".") and read_config(d)["model_type"] in kinds:
                found.append(d)
        except CheckpointError:
            continue
    return found


def rnn_label(model_dir: Path) -> str:
    """``pd98-char-lstm (LSTM 2×512)``, from the checkpoint's config."""
    from model.models.checkpoint import read_config

    config = read_config(model_dir)
    m = config.get("model", {})
    if config["model_type"] == "window":
        return f"{model_dir.name} (window {m.get('context')}×{m.get('emb_dim')} → tanh {m.get('hidden_dim')})"
    shape = f"{str(m.get('cell', 'rnn')).upper()} {m.get('num_layers')}×{m.get('hidden_dim')}"
    if config["model_type"] == "hybrid":
        shape += " + " + Path(config.get("ngram", {}).get("path", "n-gram")).name
    return f"{model_dir.name} ({shape})"


def measure_model(
    name: str, family: str, model_dir: Path, texts: dict, log: Log, keep_valid: bool, device: str = "cpu"
) -> Row:
    from model.models.loading import load_model

    t0 = time.perf_counter()
    lm = load_model(model_dir, device=device)
    scores = collect_scores(lm, texts["test"], texts["valid"] if keep_valid else None, texts["sets"])
    ppl, bpc = perplexity_of(scores.test, texts["test"])
    metrics = getattr(lm, "metrics", {}) or {}
    train_time = metrics.get("train_time_s", metrics.get("build", {}).get("wall_s"))
    row = Row(
        name,
        family,
        ppl,
        bpc,
        set_results(texts["sets"], scores.sets),
        dir_size(model_dir),
        train_time,
        metrics.get("command", ""),
        scores=scores,
        vocabulary=tuple(lm.tokenizer.tokens),
    )
    log(
        f"{name}: perplexity {ppl:.2f}, homophone top-1 {np.mean(row.rerank['homophone'].top1):.3f}, "
        f"word order top-1 {np.mean(row.rerank['wordorder'].top1):.3f} ({time.perf_counter() - t0:.0f} s)"
    )
    return row


def combination_rows(
    rnn: Row, rnn_dir: Path, ref: Row, ref_dir: Path, texts: dict, data_dir: str, spec: SetSpec
) -> list[Row]:
    """The RNN linearly mixed with the reference n-gram, and the log-linear combination (the fix).
    A backward RNN gets the log-linear row only: its per-token probabilities condition on the
    right context, so mixing them token by token with a left-to-right n-gram is no distribution
    (its "perplexity" would be meaningless); sentence scores combine, whatever the direction."""
    from model.models.checkpoint import load_tokenizer

    a, b = scores_of(rnn), scores_of(ref)
    rows = (
        []
        if load_tokenizer(rnn_dir).backward
        else [linear_mixture_row(rnn, rnn_dir, ref, ref_dir, texts, data_dir)]
    )
    assert a.valid is not None and b.valid is not None, "both rows were measured with keep_valid"
    short = rnn_dir.name
    valid = {k: v for k, v in texts["sets"].items() if k.endswith("-valid")}
    alpha = tune_loglinear_weight(valid, {k: a.sets[k] for k in valid}, {k: b.sets[k] for k in valid})
    combined = Scores(
        test=[],
        valid=None,
        sets={
            k: [
                [loglinear_logprobs(x, y, alpha) for x, y in zip(ca, cb, strict=True)]
                for ca, cb in zip(a.sets[k], b.sets[k], strict=True)
            ]
            for k in a.sets
        },
    )
    loglinear = Row(
        f"{short} + KN5, log-linear (the fix)",
        "RNN + n-gram",
        None,
        None,
        set_results(texts["sets"], combined.sets),
        command=f"rnnlm benchmark rerank --model {rnn_dir} --model {ref_dir} --data {data_dir} "
        f"--loglinear {alpha:g}{spec.cli_flags()}",
        note=f"score = {alpha:g}·log P_rnn + {1 - alpha:g}·log P_kn5, weight tuned on the valid "
        "confusion sets; not normalized, so no perplexity",
        scores=combined,
    )
    return [*rows, loglinear]


def linear_mixture_row(rnn: Row, rnn_dir: Path, ref: Row, ref_dir: Path, texts: dict, data_dir: str) -> Row:
    """The RNN and the reference n-gram mixed token by token, λ tuned on valid perplexity."""
    from model.models.mixture import tune_lambda

    a, b = scores_of(rnn), scores_of(ref)
    assert a.valid is not None and b.valid is not None, "both rows were measured with keep_valid"
    lam = tune_lambda(torch.cat(a.valid).numpy(), torch.cat(b.valid).numpy())
    mixed = a.map(b, lambda x, y: mix_logprobs(x, y, lam))
    ppl, bpc = perplexity_of(mixed.test, texts["test"])
    return Row(
        f"{rnn_dir.name} + KN5, linear mixture",
        "RNN + n-gram",
        ppl,
        bpc,
        set_results(texts["sets"], mixed.sets),
        command=f"rnnlm mix {rnn_dir} {ref_dir} --data {data_dir} --out runs/mix/{rnn_dir.name}-kn5",
        note=f"λ = {lam:.3f} (RNN weight), tuned on valid perplexity",
        scores=mixed,
    )


# -- where the RNN loses -------------------------------------------------------------------------------
def analyze(rnn: Row, ref: Row, combos: Sequence[Row], texts: dict) -> dict:
    """Margins by position and by character frequency, for the reference, the RNN and its combinations."""
    models = [ref, rnn, *combos]
    out: dict = {"rnn": rnn.name, "reference": ref.name, "positions": {}, "frequency": {}, "paired_top1": {}}
    for kind in SET_KINDS:
        key = f"{kind}-test"
        items = texts["sets"][key]
        width = edit_width(items)
        pairs = {m.name: pairs_of(items, scores_of(m).sets[key]) for m in models}
        out["positions"][kind] = {name: position_profile(p, width) for name, p in pairs.items()}
        out["frequency"][kind] = {
            m.name: frequency_profile(pairs[m.name], texts["train_counts"], width) for m in (ref, rnn)
        }
        out["paired_top1"][kind] = {
            m.name: paired_difference(m.rerank[kind].top1, ref.rerank[kind].top1) for m in models[1:]
        }
    return out


# -- the whole run -------------------------------------------------------------------------------------
def run_quality(
    data_dir: str,
    out: str | Path,
    weights_dir: str = "weights",
    extra_rnns: Sequence[str] = (),
    ngram_dir: str = "runs/ngram",
    sets_dir: str = "runs/rerank",
    spec: SetSpec | None = None,
    device: str = "cpu",
    command: str = "",
    log: Log | None = None,
) -> dict:
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = spec or SetSpec()
    t0 = time.time()
    sets = {}
    for split in ("test", "valid"):
        for kind in SET_KINDS:
            s = SetSpec(**{**spec.__dict__, "kind": kind, "split": split})
            sets[f"{kind}-{split}"], _ = build_and_save_set(data_dir, s, sets_dir)
    train_counts: Counter[str] = Counter()
    for line in load_split(data_dir, "train"):
        train_counts.update(line)
    texts: dict[str, Any] = {
        "test": load_split(data_dir, "test"),
        "valid": load_split(data_dir, "valid"),
        "sets": sets,
        "train_counts": train_counts,
    }

    rows: list[Row] = []
    dirs: dict[str, Path] = {}
    for ng in NGRAM_BASELINES:
        d = ensure_ngram(ng, data_dir, ngram_dir, log)
        dirs[ng.label] = d
        rows.append(
            measure_model(ng.label, "n-gram", d, texts, log, keep_valid=ng.label == REFERENCE, device=device)
        )
    ref = next(r for r in rows if r.name == REFERENCE)
    for kind in ("window", "hybrid"):
        for d in rnn_dirs(weights_dir, (kind,)):
            row = measure_model(
                rnn_label(d), NEURAL_FAMILIES[kind], d, texts, log, keep_valid=False, device=device
            )
            if kind == "hybrid":
                row.note = "one normalized model; size excludes the n-gram checkpoint it points at"
            rows.append(row)
    rnns = [
        (measure_model(rnn_label(d), "RNN", d, texts, log, keep_valid=True, device=device), d)
        for d in [*rnn_dirs(weights_dir), *map(Path, extra_rnns)]
    ]
    rows += [row for row, _ in rnns]
    combos: dict[str, list[Row]] = {}
    for row, d in rnns:
        if row.vocabulary != ref.vocabulary:
            log(f"{row.name}: not combined with {REFERENCE} (the two vocabularies differ)")
            continue
        combos[row.name] = combination_rows(row, d, ref, dirs[REFERENCE], texts, data_dir, spec)
        rows += combos[row.name]
    analysis = None
    from model.models.checkpoint import load_tokenizer

    forward = [row for row, d in rnns if not load_tokenizer(d).backward]  # positions in reading order
    if forward:
        best = min(forward, key=lambda r: r.perplexity if r.perplexity is not None else math.inf)
        try:
            analysis = analyze(best, ref, combos.get(best.name, []), texts)
        except ValueError as e:  # e.g. a word-level model: candidates differ in length
            log(f"no position analysis: {e}")
    result = {
        "data": str(data_dir),
        "set_spec": {k: v for k, v in spec.__dict__.items() if k != "kind"},
        "rows": [r.summary() for r in rows],
        "analysis": analysis,
        "command": command,
        "environment": environment(),
        "seconds": round(time.time() - t0, 1),
    }
    page = render_markdown(result, texts["sets"])
    old = Path(out).read_text(encoding="utf-8") if Path(out).exists() else ""
    # blocks other commands own: `rnnlm rescoring-report --into`, `rnnlm benchmark domains`
    for block in [*carried_blocks(old, "domains"), *carried_blocks(old, "rescoring:")]:
        page = page.rstrip() + "\n\n" + block + "\n"
    write_text_atomically(Path(out), page)
    write_text_atomically(
        Path(out).with_suffix(".json"), json.dumps(result, ensure_ascii=False, indent=1) + "\n"
    )
    log(f"wrote {out} and {Path(out).with_suffix('.json')} in {result['seconds']:.0f} s")
    return result


def environment() -> dict:
    import platform

    import pypinyin

    return {
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pypinyin": pypinyin.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
