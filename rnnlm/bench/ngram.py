"""The n-gram look-ups alone: µs per position of a whole next-token distribution (what the hybrid
adds to its LSTM at every position), the previous and the current torch code in one run, and each
checked against the numpy tables (float64) on the same positions.

Positions are every prefix of held-out sentences (pd98 test), so contexts are as frequent as in
use. Rows:

- numpy ``BackoffTables.next_logprobs`` from histories (the n-gram model's own path);
- the previous torch code (before issue 24: histories -> per-order searches, then ``logp[rows] +=``
  backoffs and a 2-D scatter per order; kept here, verbatim in effect, as the baseline);
- the current code from histories (``next_logprobs``), from carried contexts (``advance`` then
  ``context_logprobs``: a decoding step), and over a prefix tree (``tree_contexts`` then
  ``context_logprobs``: a scoring pass).

    .venv/bin/python -m rnnlm.bench.ngram            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.ngram --quick    # seconds: checks that it works
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from model.models.ngram.model import NGramLanguageModel
from model.models.ngram.store import load_ngram
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.models.prefix import build_tree
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, PAD_ID

from .common import (
    DATA,
    DEFAULT_CHOICE,
    REPO,
    command_line,
    machine,
    resolve_out,
    table,
    timed_runs,
    write_section,
)

KN5 = REPO / "weights" / "pd98-char-kn5"


def default_ngram() -> Path:
    """The n-gram of the served default hybrid (weights/DEFAULT.json), else the shipped KN 5-gram."""
    if DEFAULT_CHOICE.exists():
        model = REPO / json.loads(DEFAULT_CHOICE.read_text(encoding="utf-8"))["default"]
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") == "hybrid":
            return (model / config["ngram"]["path"]).resolve()
    return KN5


class PreviousTorchTables:
    """The torch look-up as it was before issue 24, for the baseline row (same tables, same
    result): contexts searched order by order from the histories, then the 1-gram row, ``logp[rows]
    += ln b`` per order and a 2-D scatter of the seen tokens."""

    def __init__(self, tables: TorchBackoffTables) -> None:
        self.t = tables
        self.keys = [torch.empty(0, dtype=torch.long)] + [tables.keys(n) for n in range(2, tables.order + 1)]
        self.logprob = [tables.unigram] + [
            tables.ngram_logprob[tables.start[n] : tables.start[n + 1]] for n in range(2, tables.order + 1)
        ]
        self.logbackoff = [
            tables.logbackoff[tables.backoff_at[n - 1] : tables.backoff_at[n - 1] + tables.sizes[n - 1]]
            for n in range(1, tables.order)
        ]

    def next_logprobs(self, histories: Tensor) -> Tensor:
        V, order = self.t.vocab_size, self.t.order
        n_rows = histories.size(0)
        logp = self.logprob[0][:V].expand(n_rows, V).clone()  # (N, V)
        contexts = self.t.context_indices(histories)  # the same searches as before
        for n in range(2, order + 1):
            context = contexts[:, n - 2]
            rows = torch.nonzero(context >= 0).squeeze(1)
            if rows.numel() == 0:
                continue
            ctx = context[rows]
            logp[rows] += self.logbackoff[n - 2][ctx].unsqueeze(1)
            keys = self.keys[n - 1]
            lo = torch.searchsorted(keys, ctx * V)
            hi = torch.searchsorted(keys, (ctx + 1) * V)
            sizes = hi - lo
            total = int(sizes.sum())
            if total == 0:
                continue
            row_of = torch.repeat_interleave(rows, sizes)
            first = torch.repeat_interleave(lo - torch.cumsum(sizes, 0) + sizes, sizes)
            entry = first + torch.arange(total)
            token = keys[entry] - context[row_of] * V
            logp[row_of, token] = self.logprob[n - 1][entry]
        logp[:, [PAD_ID, BOS_ID]] = float("-inf")
        return logp


def positions(ngram: NGramLanguageModel, count: int) -> tuple[list[list[int]], Tensor, Tensor]:
    """Held-out sentences (``[<bos>, …]`` without ``<eos>``) covering ``count`` positions, and the
    (count, order-1) histories and (count,) in-sentence index of every position."""
    path = DATA / "test.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else ["今天天气很好"] * 64
    seqs: list[list[int]] = []
    total = 0
    for line in lines:
        s = with_boundaries(ngram.tokenizer.encode(line).ids)[:-1]
        seqs.append(s)
        total += len(s)
        if total >= count:
            break
    stream = torch.tensor([t for s in seqs for t in s])
    position = torch.tensor([p for s in seqs for p in range(len(s))])
    return seqs, histories_of(stream, position, ngram.order - 1)[:count], position[:count]


def max_difference(got: Tensor, want: Tensor) -> float:
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)):
        return float("inf")
    return float((got[finite].double() - want[finite]).abs().max())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--ngram", type=Path, default=None, help="n-gram checkpoint (default: the default hybrid's)"
    )
    p.add_argument("--rows", type=int, nargs="+", default=[1, 64, 1024], help="positions per call")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the look-up alone)")
    p.add_argument("--quick", action="store_true", help="tiny durations; does not write the doc")
    p.add_argument("--seconds", type=float, default=None, help="duration of each measurement")
    p.add_argument("--out", type=Path, default=None, help="Markdown file to update (none with --quick)")
    args = p.parse_args(argv)
    args.device = "cpu"
    seconds = args.seconds or (0.1 if args.quick else 2.0)
    rows_per_call = [1, 64] if args.quick else args.rows
    torch.set_num_threads(args.threads)

    path = args.ngram or default_ngram()
    ngram = load_ngram(path)
    tables = TorchBackoffTables(ngram.tables)
    previous = PreviousTorchTables(tables)
    n = max(rows_per_call)
    seqs, hist, position = positions(ngram, n)
    want = torch.from_numpy(ngram.tables.next_logprobs(hist.numpy()))  # float64: the reference
    contexts = tables.context_indices(hist)
    # each position's contexts one token earlier (a sentence's first position: none yet)
    earlier = torch.cat([tables.start_contexts(1), contexts[:-1]])
    earlier[position == 0] = -1

    def per_call(rows: int) -> dict[str, Callable[[], Tensor]]:
        h, before, last = hist[:rows], earlier[:rows], hist[:rows, -1]
        covering, seen = [], 0
        for s in seqs:  # the sentences of these positions, the last one cut
            covering.append(s[: rows - seen])
            seen += len(covering[-1])
            if seen >= rows:
                break
        tree = build_tree(covering)
        parent, token = torch.tensor(tree.parent), torch.tensor(tree.token)
        nodes = torch.tensor([v for path in tree.paths for v in path])  # each position's node
        return {
            "numpy tables (the n-gram model's path), histories": lambda: torch.from_numpy(
                ngram.tables.next_logprobs(h.numpy())
            ),
            "previous torch code, histories": lambda: previous.next_logprobs(h),
            "now: histories (next_logprobs)": lambda: tables.next_logprobs(h),
            "now: carried contexts (advance + context_logprobs, a decoding step)": lambda: (
                tables.context_logprobs(tables.advance(before, last))
            ),
            "now: prefix tree (tree_contexts + context_logprobs, a scoring pass)": lambda: (
                tables.context_logprobs(tables.tree_contexts(parent, token)[nodes])
            ),  # a tree computes each distinct prefix once; here every position's row is kept
        }

    rows_out = []
    baseline: dict[int, float] = {}
    with torch.inference_mode():
        for rows in rows_per_call:
            ref = want[:rows]
            for name, fn in per_call(rows).items():
                diff = max_difference(fn(), ref)

                def call(fn: Callable[[], Tensor] = fn, rows: int = rows) -> tuple[int]:
                    fn()
                    return (rows,)

                us = 1e6 / timed_runs(call, seconds, min_runs=3).rate()
                if name.startswith("previous"):
                    baseline[rows] = us
                rows_out.append([rows, name, us, baseline.get(rows, float("nan")) / us, diff])

    sizes = ", ".join(f"{k:,}" for k in tables.sizes)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    lines = [
        "### N-gram look-ups (the hybrid's n-gram part, alone)",
        "",
        f"- command: `{command_line('rnnlm.bench.ngram', argv)}`"
        + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
        f"- {machine()}",
        f"- n-gram: `{shown}`, order {ngram.order}, n-grams per order {sizes}; "
        f"{len(tables.dense_rows) - tables.groups} ready bigram rows "
        f"({(len(tables.dense_rows) - tables.groups) * tables.vocab_size * 4 / 2**20:.1f} MiB)",
        f"- workload: the first {n:,} positions of pd98 test (every prefix of its sentences); a call computes "
        f"the whole distribution (V = {tables.vocab_size:,}) at `rows` positions; {seconds:g} s per row; "
        "max |Δ| against the numpy tables in float64",
        "",
        table(["rows", "implementation", "µs per position", "× previous", "max abs Δ"], rows_out),
    ]
    text = "\n".join(lines)
    print(text)
    write_section("ngram", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
