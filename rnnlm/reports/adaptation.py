"""``rnnlm benchmark adapt``: adapting a model to a domain it never saw, with 10 k to 1 M characters.

For each size, the first characters of the domain's shuffled train split (seeded) go through
``rnnlm adapt`` (:mod:`model.training.adapt`); then, on the domain's test split and on every other
domain's (forgetting), three models are measured the same way::

    base        the model as shipped
    n-gram      what speech toolkits do: the base interpolated with a Kneser-Ney 5-gram of the
                text (SRILM's -mix-lm), λ tuned on the same held-out lines
    domain      the fine-tuned network interpolated with the same 5-gram (λ tuned likewise)
    adapted     rnnlm adapt: the base, whole, and the domain model in a sentence mixture

with per-sentence perplexity and, on the domain's test, homophone and word-order top-1. The
fine-tune's held-out perplexity against the tokens it has read is the curve (from its log).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path

from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.models.mixture import MixtureLanguageModel, token_logprobs, tune_lambda
from model.quality.rerank import SetSpec, build_and_save_set, rerank
from model.text.data import load_split
from model.training.adapt import AdaptJob, adapt, hold_out, read_text_lines, replay_lines

from .blocks import write_report

BLOCK = "adaptation"
KINDS = ("homophone", "wordorder")


def measure(lm, tests: dict[str, list[str]], sets: dict[str, list]) -> dict:
    row = {name: evaluate_lines(lm, lines)["perplexity"] for name, lines in tests.items()}
    for kind, items in sets.items():
        row[kind] = rerank(lm, items)[0].summary()["top1"]
    return row


def run_adaptation(
    base: str,
    domain: tuple[str, str],
    others: dict[str, str],
    sizes: Sequence[int],
    minutes: float,
    work: str | Path,
    out: str | Path,
    limit: int,
    set_size: int,
    command: str,
    log=print,
) -> dict:
    name, corpus = domain
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    tests = {name: load_split(corpus, "test")[:limit]} | {
        n: load_split(c, "test")[:limit] for n, c in others.items()
    }
    sets = {
        k: build_and_save_set(corpus, SetSpec(kind=k, split="test", size=set_size), work / "sets")[0]
        for k in KINDS
    }
    base_lm = load_model(base)
    record: dict = {
        "command": command,
        "base": base,
        "domain": name,
        "minutes": minutes,
        "limit": limit,
        "base_row": measure(base_lm, tests, sets),
        "runs": [],
    }
    log(f"base: {record['base_row']}")
    for size in sizes:
        text = work / f"{name}-{size}.txt"
        text.write_text("\n".join(replay_lines(corpus, size, seed=0)) + "\n", encoding="utf-8")
        out_dir = work / f"{Path(base).name}-{name}-{size}"
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        cpu0, wall0 = _cpu_s(), time.time()
        metrics = adapt(
            AdaptJob(base=base, texts=[str(text)], out_dir=str(out_dir), minutes=minutes, command=command),
            log=lambda line: log("  " + line),
        )
        cpu, wall = _cpu_s() - cpu0, time.time() - wall0
        adapted = load_model(out_dir)
        _, held = hold_out(read_text_lines([text]))  # the lines λ was tuned on
        domain_kn = load_model(out_dir / "domain-kn5")
        lam = tune_lambda(token_logprobs(base_lm, held), token_logprobs(domain_kn, held))
        ngram_only = MixtureLanguageModel(base_lm, domain_kn, lam)
        curve = [
            {"cpu_min": r["cpu_s"] / 60, "tokens": r["tokens_seen"], "held_out": r["valid_perplexity"]}
            for r in (metrics.get("finetune") or {}).get("history", [])
            if "cpu_s" in r
        ]
        run = {
            "chars": metrics["adapted"]["train_chars"],
            "adapt_cpu_min": cpu / 60,
            "adapt_wall_min": wall / 60,
            "lambda_adapted": metrics["lambda"],
            "lambda_ngram": lam,
            "ngram_only": measure(ngram_only, tests, sets),
            "domain_only": measure(load_model(out_dir / "domain"), tests, sets),  # fine-tune + n-gram alone
            "adapted": measure(adapted, tests, sets),
            "curve": curve,
        }
        log(f"{size}: {json.dumps(run)}")
        record["runs"].append(run)
    write_report(out, BLOCK, record, render(record))
    return record


def _cpu_s() -> float:
    """CPU time of this process and its children (all threads)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def render(record: dict) -> str:
    d = record["domain"]
    others = [k for k in record["base_row"] if k not in (d, *KINDS)]
    head = (
        f"| text of {d} | model | {d} ppl | "
        + " | ".join(f"{o} ppl" for o in others)
        + f" | {d} homophone | {d} word order | CPU min |\n|---|---|"
        + "---:|" * (len(others) + 4)
        + "\n"
    )

    def cells(row: dict) -> str:
        return " | ".join(
            [
                f"{row[d]:.2f}",
                *(f"{row[o]:.2f}" for o in others),
                f"{row['homophone']:.3f}",
                f"{row['wordorder']:.3f}",
            ]
        )

    base = record["base_row"]
    body = f"| – | base `{Path(record['base']).name}` | {cells(base)} | – |\n"
    for run in record["runs"]:
        size = f"{run['chars'] / 1000:,.0f} k"
        body += f"| {size} | n-gram only (λ {run['lambda_ngram']:.2f}) | {cells(run['ngram_only'])} | – |\n"
        body += f"| {size} | fine-tuned + n-gram (λ {run['lambda_adapted']:.2f}) | {cells(run['domain_only'])} | – |\n"
        cut = (1 - run["adapted"][d] / base[d]) * 100
        worst = max((run["adapted"][o] / base[o] - 1) * 100 for o in others) if others else 0.0
        body += (
            f"| {size} | **adapted**: base + the above, per sentence | {cells(run['adapted'])} | "
            f"{run['adapt_cpu_min']:.1f} |\n"
        )
        body += f"| | | {d} −{cut:.0f}% | worst other {worst:+.1f}% | | | |\n"
    curves = ""
    for run in record["runs"]:
        curve = run["curve"]
        step = max(1, -(-len(curve) // 10))  # at most about ten points a line
        shown = curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])
        points = ", ".join(f"{p['tokens'] / 1000:,.0f} k tokens → {p['held_out']:.1f}" for p in shown)
        best = min(curve, key=lambda p: p["held_out"]) if curve else None
        kept = f" (kept: {best['held_out']:.1f} at {best['tokens'] / 1000:,.0f} k)" if best else ""
        curves += f"- {run['chars'] / 1000:,.0f} k characters: {points}{kept}\n"
    return (
        f"By `{record['command'] or 'rnnlm benchmark adapt'}`. Test splits "
        + (f"(first {record['limit']} lines each)" if record["limit"] else "")
        + f"; fine-tune budget {record['minutes']} minutes of wall clock; CPU minutes count every thread "
        "of the run (fine-tune, n-gram, λ).\n\n"
        + head
        + body
        + "\nHeld-out perplexity of the fine-tune as it reads (from its log; the checkpoint with the best is "
        "kept, so a small text that starts to be memorized costs nothing):\n\n" + curves
    )
