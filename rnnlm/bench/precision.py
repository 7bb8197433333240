"""Precision and batch invariance: what bf16 and fixed-tile products cost or gain, and what bf16
changes in the scores.

For each setting of the model's numerics (fp32, fp32 batch-invariant, bf16, bf16 batch-invariant;
the bf16 rows only where the device multiplies bfloat16 natively) the same workloads run in
turns, several rounds, best round kept: prefix-shared scoring of n-best lists (1 and 32 lists per
call), one next-token distribution after a 20-character prefix, and a decoding step of 1 and 64
rows. Each figure is compared with fp32 (ratio) and with the matrix-product ceiling of its own
precision (an n×n float32 or bfloat16 product). Then the scores: the largest log-prob difference
bf16 − fp32, and the top-1 accuracy of both on the saved valid reranking sets
(``runs/rerank/*-valid-*.jsonl``, scored as ``rnnlm benchmark rerank --items`` scores them).
Both for the served default model and the plain LSTM, one after the other.

    .venv/bin/python -m rnnlm.bench.precision            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.precision --quick    # seconds: checks that it works
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from model.models.lm import LanguageModel
from model.models.precision import bf16_supported
from model.quality.confusion import load_items
from model.quality.rerank import rerank

from .common import (
    REPO,
    BenchModel,
    base_parser,
    ceiling,
    command_line,
    encode_lists,
    flops_per_token,
    load_bench_models,
    matmul_gflops,
    models_header,
    nbest_lists,
    resolve_out,
    table,
    timed_loop,
    write_section,
)

RERANK_SETS = REPO / "runs" / "rerank"
Mode = tuple[str, bool]  # (precision, batch_invariant)


def matmul_gflops_bf16(device: str = "cpu", n: int | None = None, seconds: float = 1.0) -> float:
    """Best rate of an n×n bfloat16 matrix product over ``seconds`` (GFLOP/s)."""
    return matmul_gflops(device, n, seconds, dtype=torch.bfloat16)


def mode_name(mode: Mode) -> str:
    return mode[0] + (", batch-invariant" if mode[1] else "")


def workloads(lm: LanguageModel, lists: list[list[list[int]]]) -> dict[str, Callable[[], int]]:
    """Name -> a call returning the positions (or rows) it computed."""

    def scoring(k: int) -> Callable[[], int]:
        calls = [[s for cands in lists[i : i + k] for s in cands] for i in range(0, len(lists), k)]
        it = iter(range(10**12))
        return lambda: lm.score_tree(calls[next(it) % len(calls)]).computed

    prefix = lists[0][0][:21]  # <bos> and 20 characters

    def step(rows: int) -> Callable[[], int]:
        state, ids = lm.start_state(rows), torch.full((rows,), prefix[1], dtype=torch.long)
        return lambda: (lm.step(state, ids), rows)[1]

    return {
        "score, 1 list/call": scoring(1),
        "score, 32 lists/call": scoring(32),
        "next-token, 20-char prefix": lambda: lm.score_tree([], [prefix]).computed,
        "step, 1 row": step(1),
        "step, 64 rows": step(64),
    }


def speed_rows(
    lm: LanguageModel,
    lists: list[list[list[int]]],
    modes: Sequence[Mode],
    seconds: float,
    rounds: int,
    device: str,
    ceilings: dict[str, float],
) -> list[list]:
    """Every workload in every mode, the modes in turns, the best of ``rounds`` kept."""
    work = workloads(lm, lists)
    best: dict[tuple[str, Mode], float] = {}
    for _ in range(rounds):
        for mode in modes:
            lm.set_numerics(*mode)
            for name, fn in work.items():
                units, elapsed = timed_loop(fn, seconds / rounds, device, min_runs=1)
                best[(name, mode)] = max(best.get((name, mode), 0.0), units / elapsed)
    lm.set_numerics()
    fpt = flops_per_token(lm)
    rows = []
    for name in work:
        base = best[(name, modes[0])]
        for mode in modes:
            rate = best[(name, mode)]
            gflops = rate * fpt / 1e9
            rows.append([name, mode_name(mode), rate, rate / base, gflops, 100 * gflops / ceilings[mode[0]]])
    return rows


def score_differences(lm: LanguageModel, seqs: list[list[int]]) -> tuple[float, float]:
    """Largest |bf16 − fp32| of one token's log-prob, and of one sequence's total."""
    lm.set_numerics("fp32")
    want = lm.score_tree(seqs).logprobs
    lm.set_numerics("bf16")
    got = lm.score_tree(seqs).logprobs
    lm.set_numerics()
    pairs = [(a, b) for a, b in zip(got, want, strict=True) if a.numel()]
    token = max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
    total = max((abs(float(a.sum() - b.sum())) for a, b in pairs), default=0.0)
    return token, total


def rerank_rows(lm: LanguageModel, sets: Sequence[Path], limit: int | None) -> list[list]:
    """Top-1 of fp32 and bf16 on each saved reranking set, and the items whose choice changed."""
    rows = []
    for path in sets:
        items = load_items(path)[:limit]
        results, scores = {}, {}
        for precision in ("fp32", "bf16"):
            lm.set_numerics(precision)
            res, per_token = rerank(lm, items)
            results[precision] = res
            scores[precision] = [t for cands in per_token for t in cands]
        lm.set_numerics()
        top = {p: sum(r.top1) / len(items) for p, r in results.items()}
        changed = sum(
            a.index(max(a)) != b.index(max(b))
            for a, b in zip(results["fp32"].scores, results["bf16"].scores, strict=True)
        )
        diff = max(float((a - b).abs().max()) for a, b in zip(scores["fp32"], scores["bf16"], strict=True))
        rows.append(
            [path.stem, len(items), top["fp32"], top["bf16"], top["bf16"] - top["fp32"], changed, diff]
        )
    return rows


def model_lines(m: BenchModel, args, seconds: float, ceilings: dict[str, float], has_bf16: bool) -> list[str]:
    """One model's speed table, score differences and reranking rows."""
    rounds = 1 if args.quick else args.rounds
    n_lists = 8 if args.quick else args.lists
    limit = 10 if args.quick else args.items
    lm = m.lm
    modes: list[Mode] = [("fp32", False), ("fp32", True)]
    if has_bf16:
        modes += [("bf16", False), ("bf16", True)]
    lists = encode_lists(lm, nbest_lists(lm, n_lists))
    with torch.inference_mode():
        rows = speed_rows(lm, lists, modes, seconds, rounds, args.device, ceilings)
        sets = sorted(RERANK_SETS.glob("*-valid-*.jsonl")) if has_bf16 else []
        quality = rerank_rows(lm, sets, limit)
        token_diff, total_diff = (
            score_differences(lm, [s for c in lists for s in c]) if has_bf16 else (float("nan"),) * 2
        )
    lines = [
        f"#### `{m.name}`",
        "",
        f"- workload: {len(lists)} n-best lists of 10 candidates (~20 chars), prefix-shared; "
        f"{seconds:g} s per row over {rounds} round(s) in turns, the best round kept; "
        "rate = positions (scoring, next-token) or rows (step) per second",
        "",
        table(["workload", "numerics", "rate /s", "× fp32", "GFLOP/s", "% of its matmul"], rows),
        "",
    ]
    if has_bf16:
        lines += [
            f"- largest |log-prob bf16 − fp32| on this workload: {token_diff:.3g} per token, "
            f"{total_diff:.3g} per sentence",
            "",
            "Reranking (top-1 accuracy on the saved valid sets; changed = items whose first choice differs):",
            "",
            table(
                ["set", "items", "top-1 fp32", "top-1 bf16", "Δ top-1", "changed", "max |Δ log-prob|"],
                quality,
            )
            if quality
            else f"(no `{RERANK_SETS.relative_to(REPO)}/*-valid-*.jsonl`: run `rnnlm benchmark rerank` first)",
            "",
        ]
        changed = sum(r[5] for r in quality)
        items = sum(r[1] for r in quality)
        lines.append(
            f"- default precision: fp32. bf16 moves a token's log-prob by up to {token_diff:.3g} and changes "
            f"{changed} of {items} reranking choices here"
            + (" (nil for users: the lead may consider bf16)" if token_diff == 0 and changed == 0 else "")
            + "; opt in per model with RNNLM_MODEL_PRECISION"
        )
    invariant = [r for r in rows if r[1] == "fp32, batch-invariant"]
    lines += [
        "- batch invariance (RNNLM_BATCH_INVARIANT) costs, vs fp32: "
        + ", ".join(f"{r[0]} ×{r[3]:.2f}" for r in invariant),
        "",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0], several_models=True)
    p.add_argument("--lists", type=int, default=128, help="n-best lists in the speed workload")
    p.add_argument("--rounds", type=int, default=3, help="turns through the modes (best kept)")
    p.add_argument("--items", type=int, default=None, help="items per reranking set (default: all)")
    args = p.parse_args(argv)
    seconds = args.seconds or (0.2 if args.quick else 3.0)

    models = load_bench_models(args)
    has_bf16 = bf16_supported(args.device)
    probe = ceiling(args.device, min(seconds, 2.0))
    bf16_rate = matmul_gflops_bf16(args.device, seconds=min(seconds, 2.0)) if has_bf16 else float("nan")
    ceilings = {"fp32": probe.before, "bf16": bf16_rate}
    body = [line for m in models for line in model_lines(m, args, seconds, ceilings, has_bf16)]
    probe.after = matmul_gflops(args.device, seconds=min(seconds, 2.0))
    lines = [
        models_header(
            "Precision and batch invariance", args, models, probe, command_line("rnnlm.bench.precision", argv)
        ),
        f"- bfloat16 matmul probe: {bf16_rate:.1f} GFLOP/s ({bf16_rate / probe.gflops:.2f}× float32)"
        if has_bf16
        else f"- no bf16 rows: {args.device} has no native bfloat16 products",
        "",
        *body,
    ]
    text = "\n".join(lines).rstrip()
    print(text)
    write_section("precision", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
