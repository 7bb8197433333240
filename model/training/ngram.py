"""``rnnlm train-ngram``: count a corpus, smooth, evaluate on valid/test, write a checkpoint.

The smoothing parameter of add-k (k) and of fixed-weight interpolation (ε), when not given, is
chosen on the valid split from a small log-spaced grid: counting happens once, each candidate
only re-smooths, so the search costs seconds. Kneser-Ney and Katz estimate their discounts from
the training counts and have nothing to tune.
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import __version__
from model.models.evaluate import evaluate_lines
from model.models.ngram.counts import count_ngrams
from model.models.ngram.model import NGramLanguageModel
from model.models.ngram.prune import parse_thresholds, prune
from model.models.ngram.smoothing import SMOOTHERS
from model.models.ngram.store import save_ngram, tables_from_arrays, tables_to_arrays
from model.text.batching import with_boundaries
from model.text.data import corpus_checksums, load_split
from model.text.tokenizer import Tokenizer

TUNED = {"addk": "k", "interp": "epsilon"}  # smoothing -> its parameter
GRIDS = {
    "k": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0],
    "epsilon": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
}
NAMES = {
    "addk": "add-k",
    "interp": "interpolated (fixed ε)",
    "katz": "Katz backoff (Good-Turing)",
    "kn": "interpolated modified Kneser-Ney",
}


@dataclass
class NGramJob:
    data_dir: str  # corpus directory from `rnnlm prepare-data`
    out_dir: str  # checkpoint directory to write
    order: int = 5
    smoothing: str = "kn"  # addk | interp | katz | kn
    k: float | None = None  # add-k; None: tuned on valid
    epsilon: float | None = None  # interp; None: tuned on valid
    tokenizer_kind: str = "char"
    normalizer: str = ""  # word: how raw text is read ("wikitext", "ptb"; see model.text.english)
    min_count: int = 1  # rarer pieces become <unk> (1 keeps every training piece, as lmplz does)
    reverse: bool = False  # a right-to-left model (backward tokenizer)
    prune: str = (
        ""  # count thresholds per order, "0 0 0 1 1" (model.models.ngram.prune); "" keeps every n-gram
    )
    quantize: int = 0  # 8: store orders 2+ in one byte per value (model.models.ngram.quantize); 0: float32
    command: str = ""  # the command line, recorded in the model card


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train_ngram(job: NGramJob, log=print) -> dict:
    if job.smoothing not in SMOOTHERS:
        raise ValueError(f"smoothing must be one of {sorted(SMOOTHERS)}, got {job.smoothing!r}")
    if job.order < 1:
        raise ValueError("order must be >= 1")
    wall, cpu = time.perf_counter(), time.process_time()
    train = load_split(job.data_dir, "train")
    valid = load_split(job.data_dir, "valid")
    tokenizer = Tokenizer.build(
        train,
        kind=job.tokenizer_kind,
        min_count=job.min_count,
        direction="backward" if job.reverse else "forward",
        normalizer=job.normalizer,
    )
    seqs = [with_boundaries(tokenizer.encode(line).ids) for line in train]
    counts = count_ngrams(seqs, job.order, tokenizer.vocab_size)
    del seqs
    log(f"counted {counts.sizes()} n-grams of orders 1-{job.order}")

    params: dict = {}
    tuning: list[dict] = []
    name = TUNED.get(job.smoothing)
    if name is not None:
        value = getattr(job, name)
        if value is None:
            for candidate in GRIDS[name]:
                tables, _ = SMOOTHERS[job.smoothing](counts, **{name: candidate})
                ppl = evaluate_lines(NGramLanguageModel(tables, tokenizer), valid)["perplexity"]
                tuning.append({name: candidate, "valid_perplexity": ppl})
                log(f"  {name}={candidate:g}: valid perplexity {ppl:.2f}")
            value = min(tuning, key=lambda t: t["valid_perplexity"])[name]
        params[name] = value
    tables, info = SMOOTHERS[job.smoothing](counts, **params)
    if job.prune:
        thresholds = parse_thresholds(job.prune, job.order)
        tables = prune(counts, tables, thresholds)
        info = {**info, "prune": thresholds}
        log(f"pruned to {tables.sizes()} n-grams (thresholds {thresholds})")
    if job.quantize:  # evaluate what is stored: the tables as they load back
        tables = tables_from_arrays(tables_to_arrays(tables, job.quantize), job.order, tokenizer.vocab_size)
        info = {**info, "quantized_bits": job.quantize}
    lm = NGramLanguageModel(tables, tokenizer, job.smoothing, info)
    build = {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    log(f"built in {build['wall_s']} s ({build['cpu_s']} s CPU), peak RSS {build['peak_rss_mb']} MB")

    metrics: dict[str, Any] = {
        "model_type": "ngram",
        "order": job.order,
        "smoothing": job.smoothing,
        "params": info,
        "ngrams": tables.sizes(),
        "tuning": tuning,
        "tokenizer": {
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "min_count": job.min_count,
            "direction": tokenizer.direction,
        },
        "data": {
            "dir": str(job.data_dir),
            "sha256": corpus_checksums(job.data_dir),
            "train_lines": len(train),
            "train_tokens": int(counts[1].counts.sum()),
        },
        "build": build,
        "job": asdict(job),
        "command": job.command,
        "hardware": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "rnnlm_version": __version__,
    }
    for split, lines in (("valid", valid), ("test", load_split(job.data_dir, "test"))):
        metrics[split] = evaluate_lines(lm, lines)
        log(f"{split}: perplexity {metrics[split]['perplexity']:.2f}")
    lm.metrics = metrics
    save_ngram(job.out_dir, lm, metrics, render_ngram_card(job.out_dir, metrics), quantize_bits=job.quantize)
    return metrics


def describe_smoothing(metrics: dict) -> str:
    """The smoothing parameters in words: discounts per order, or the tuned k / ε."""
    params, smoothing = metrics["params"], metrics["smoothing"]
    if smoothing == "kn":
        rows = "\n".join(
            f"| {n} | " + " | ".join(f"{d:.4f}" for d in ds) + " |"
            for n, ds in enumerate(params["discounts"], start=1)
        )
        fallback = params.get("discount_fallback")
        note = f"\n\nOrders {fallback}: too few counts, lmplz's fallback discounts." if fallback else ""
        if params.get("prune"):
            note += (
                f"\n\nPruned by count (thresholds per order {params['prune']}, as `lmplz --prune`): an "
                "n-gram seen at most that often is dropped unless a longer one needs it; backoff weights "
                "re-normalized (model/models/ngram/prune.py)."
            )
        if params.get("quantized_bits"):
            note += (
                f"\n\nStored in {params['quantized_bits']} bits per log-prob and backoff (orders 2 and up; "
                "equal-count bins, as KenLM's `-q 8 -b 8`; model/models/ngram/quantize.py). The figures above "
                "are the stored model's."
            )
        return (
            "Discounts from the count-of-counts (Chen & Goodman eq. 26), computed as KenLM's `lmplz` "
            "does:\n\n| order | D1 | D2 | D3+ |\n|---|---|---|---|\n" + rows + note
        )
    if smoothing == "katz":
        return (
            "Discounts per order (Good-Turing up to count 5 where the counts allow): "
            + ", ".join(f"{n}: {d}" for n, d in enumerate(params["discounts"], start=1))
            + "."
        )
    key = TUNED[smoothing]
    text = f"{key} = {params[key]:g}"
    if metrics.get("tuning"):
        tried = ", ".join(f"{t[key]:g} ({t['valid_perplexity']:.1f})" for t in metrics["tuning"])
        text += f", the best valid perplexity of: {tried}"
    return text + "."


def render_ngram_card(out_dir: str, metrics: dict) -> str:
    """MODEL_CARD.md of an n-gram checkpoint, from its metrics (numbers never typed by hand)."""

    def cell(split: str, key: str, spec: str) -> str:
        value = metrics.get(split, {}).get(key)
        return "n/a" if value is None else format(value, spec)

    rows = "\n".join(
        f"| {s} | {cell(s, 'perplexity', '.2f')} | {cell(s, 'bits_per_char', '.3f')} "
        f"| {cell(s, 'tokens', 'd')} | {cell(s, 'oov', 'd')} |"
        for s in ("valid", "test")
    )
    name = Path(out_dir).name
    tok = metrics["tokenizer"]
    build = metrics["build"]
    sizes = ", ".join(f"{n:,}" for n in metrics["ngrams"])
    sha = "\n".join(f"- {k}: `{v}`" for k, v in metrics["data"]["sha256"].items())
    return f"""# Model card: {name}

A {metrics["order"]}-gram language model over {"characters" if tok["kind"] == "char" else "words"}
({tok["vocab_size"]} tokens including `<pad> <unk> <bos> <eos>`), smoothed with
{NAMES.get(metrics["smoothing"], metrics["smoothing"])}. N-grams per order (as an ARPA header counts them):
{sizes}.

{describe_smoothing(metrics)}

Each sentence is `<bos> … <eos>`: `<bos>` is context only, `<eos>` is predicted, unknown input
is `<unk>`, which has its own nonzero probability. Served through the same interface as the
RNN (`model.models.lm.LanguageModel`); `rnnlm export-arpa` writes it as an ARPA file for KenLM/SRILM.

## Data
Train: {metrics["data"]["train_lines"]} lines, {metrics["data"]["train_tokens"]:,} predicted tokens
(with `<eos>`) from `{metrics["data"]["dir"]}`. Split checksums (sha256):
{sha}

## Build
```
{metrics.get("command", "")}
```
{build["wall_s"]} s wall clock, {build["cpu_s"]} s CPU, peak memory {build["peak_rss_mb"]} MB
({metrics["hardware"]["processor"]}, Python {metrics["hardware"]["python"]}).

## Results (per sentence, `<eos>` counted, OOVs included)
Measured by `rnnlm evaluate {out_dir} --data {metrics["data"]["dir"]} --split test`.

| split | perplexity | bits/char | tokens | OOV |
|---|---|---|---|---|
{rows}

## Limits
- Counts of one corpus: text unlike it falls back to short contexts.
- Every unknown character or word is the one `<unk>` token.
"""


def import_arpa(
    arpa_path: str | Path, out_dir: str | Path, data_dir: str | Path | None = None, command: str = ""
) -> dict:
    """``rnnlm import-arpa``: an ARPA file as a checkpoint directory (evaluated on ``data_dir``)."""
    from model.models.ngram.arpa import read_arpa
    from model.text.data import sha256_file

    wall = time.perf_counter()
    lm, info = read_arpa(arpa_path)
    metrics: dict = {
        "model_type": "ngram",
        "order": lm.order,
        "smoothing": "arpa",
        "params": info,
        "ngrams": lm.tables.sizes(),
        "source": {"file": str(arpa_path), "sha256": sha256_file(arpa_path)},
        "tokenizer": {"kind": lm.tokenizer.kind, "vocab_size": lm.vocab_size},
        "build": {"wall_s": round(time.perf_counter() - wall, 2), "peak_rss_mb": round(peak_rss_mb(), 1)},
        "command": command,
    }
    if data_dir is not None:
        metrics["data"] = {"dir": str(data_dir), "sha256": corpus_checksums(data_dir)}
        for split in ("valid", "test"):
            metrics[split] = evaluate_lines(lm, load_split(data_dir, split))
    lm.metrics = metrics
    save_ngram(out_dir, lm, metrics, render_imported_card(out_dir, metrics))
    return metrics


def render_imported_card(out_dir: str | Path, metrics: dict) -> str:
    results = (
        "\n".join(
            f"- {s}: perplexity {metrics[s]['perplexity']:.2f} ({metrics[s]['tokens']} tokens, "
            f"{metrics[s]['oov']} OOV), on `{metrics['data']['dir']}`"
            for s in ("valid", "test")
            if s in metrics
        )
        or "- not evaluated (no --data given)"
    )
    sizes = ", ".join(f"{n:,}" for n in metrics["ngrams"])
    return f"""# Model card: {Path(out_dir).name}

A {metrics["order"]}-gram backoff model imported from the ARPA file `{metrics["source"]["file"]}`
(sha256 `{metrics["source"]["sha256"]}`), probabilities kept as they are.
{metrics["tokenizer"]["kind"]}-level vocabulary of {metrics["tokenizer"]["vocab_size"]} tokens
(its 1-grams plus `<pad> <unk> <bos> <eos>`). N-grams per order: {sizes}.
Fix-ups on import: `{metrics["params"]}`.

```
{metrics.get("command", "")}
```

## Results (per sentence, `<eos>` counted, OOVs included)
{results}

How it was trained, on what, is whatever the ARPA file's author says: this card only knows the file.
"""
