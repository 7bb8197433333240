"""``rnnlm benchmark context``: what the sentences before a sentence buy, as ``/score``'s ``context``.

Each test sentence is scored the way ``/score`` scores a candidate with ``"context": "<the k
sentences before it>"`` (read by the model, never scored), for k = 0, 1, 2, …; the table gives the
per-sentence perplexity of the same targets for each k. The test splits of :mod:`model.text.corpora`
keep each document's sentences in order, so the line before a line is, nearly always, the
sentence before it in the same review or page (at a document's first line it is the previous
document's last: the measurement includes those few misleading contexts, as a user's stream of
utterances would).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from model.inference.scoring import ScoreOptions, prepare_candidates
from model.models.loading import load_model
from model.text.data import load_split

from .blocks import write_report

BLOCK = "context"


def context_perplexities(lm, lines: Sequence[str], max_context: int, batch: int = 128) -> list[float]:
    """Per-sentence perplexity of ``lines`` with 0 … ``max_context`` previous lines as context."""
    out = []
    for k in range(max_context + 1):
        prepared = [
            prepare_candidates(lm.tokenizer, [line], ScoreOptions(context="".join(lines[max(0, i - k) : i])))[
                0
            ]
            for i, line in enumerate(lines)
        ]
        total, count = 0.0, 0
        for start in range(0, len(prepared), batch):
            chunk = prepared[start : start + batch]
            for cand, logp in zip(chunk, lm.sequence_logprobs([c.ids for c in chunk]), strict=True):
                scored = logp[cand.first_scored :]
                total += float(scored.sum())
                count += len(scored)
        out.append(math.exp(-total / max(count, 1)))
    return out


def run_context(
    data: dict[str, str], models: Sequence[str], out: str | Path, max_context: int, limit: int, command: str
) -> dict:
    rows = []
    for model_dir in models:
        lm = load_model(model_dir)
        domains = {}
        for name, corpus in data.items():
            lines = load_split(corpus, "test")[:limit] if limit else load_split(corpus, "test")
            domains[name] = context_perplexities(lm, lines, max_context)
        rows.append({"model": Path(model_dir).name, "domains": domains})
    record = {"command": command, "data": data, "max_context": max_context, "limit": limit, "rows": rows}
    write_report(out, BLOCK, record, render(record))
    return record


def render(record: dict) -> str:
    ks = range(record["max_context"] + 1)
    head = "| model | test | " + " | ".join(f"{k} before" for k in ks) + " | change with the most |\n"
    head += "|---|---|" + "---:|" * (len(ks) + 1) + "\n"
    body = ""
    for row in record["rows"]:
        for domain, ppl in row["domains"].items():
            change = (ppl[-1] / ppl[0] - 1) * 100
            body += (
                f"| {row['model']} | {domain} | "
                + " | ".join(f"{p:.2f}" for p in ppl)
                + f" | {change:+.1f}% |\n"
            )
    lines = f"first {record['limit']} lines of each" if record["limit"] else "all lines of each"
    return (
        f"By `{record['command'] or 'rnnlm benchmark context'}` ({lines} test split). Per-sentence "
        "perplexity of the same sentences scored with the 0, 1, 2 … sentences before them sent as "
        "`context`.\n\n" + head + body
    )
