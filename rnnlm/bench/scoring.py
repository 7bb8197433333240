"""Library scoring throughput (no HTTP): dense vs prefix-shared, and through the engine, for the
served default model and the plain LSTM in the same run (their ratio last).

Workload: n-best lists of 10 candidates of ~20 characters (a held-out clause and 9 variants with
1-3 characters replaced). Then prefix sharing on the homophone and word-order confusion sets of
the reranking benchmark (6-way lists differing by one edit): positions computed with and without
the prefix tree, the time each takes, and the largest score difference between the two.

A row's rates count the work of its timed calls only (``timed_runs``: the warm-up's is left out).

    .venv/bin/python -m rnnlm.bench.scoring            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.scoring --quick    # seconds: checks that it works
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import torch

from model.inference.engine import Engine, EngineConfig
from model.models.lm import LanguageModel
from model.models.prefix import score_tree

from .common import (
    DATA,
    BenchModel,
    Clock,
    base_parser,
    ceiling,
    command_line,
    encode_lists,
    flops_per_token,
    load_bench_models,
    mark,
    matmul_gflops,
    models_header,
    nbest_lists,
    ratio_rows,
    resolve_out,
    table,
    timed_loop,
    timed_runs,
    write_section,
)

HEADERS = [
    "method",
    "batch",
    "requested tok/s",
    "computed pos/s",
    "computed / requested",
    "GFLOP/s",
    "% of matmul",
]


def library_rows(
    lm: LanguageModel,
    lists: list[list[list[int]]],
    per_call: Sequence[int],
    seconds: float,
    device: str,
    gflops: float,
    clock: Clock | None = None,
) -> list[list]:
    fpt = flops_per_token(lm)
    rows = []

    def measure(name: str, k: int, run) -> None:
        calls = [lists[i : i + k] for i in range(0, len(lists) - k + 1, k)] or [lists]
        turn = iter(range(10**12))

        def once() -> tuple[int, int]:  # (requested, computed) positions of one call
            batch = calls[next(turn) % len(calls)]
            return run([s for cands in batch for s in cands])

        timed = timed_runs(once, seconds, device, clock=clock)  # counts the timed calls only
        (req, comp), elapsed = timed.counts, timed.elapsed
        rate = comp / elapsed * fpt / 1e9
        rows.append(
            [name, f"{k} lists/call", req / elapsed, comp / elapsed, comp / req, rate, 100 * rate / gflops]
        )

    def plain(seqs):
        lm.sequence_logprobs(seqs)
        n = sum(len(s) - 1 for s in seqs)
        return n, n

    def tree(share: bool):
        def run(seqs):
            res = score_tree(lm, seqs, share=share)
            return res.requested, res.computed

        return run

    for k in per_call:
        measure("lm.sequence_logprobs (plain)", k, plain)
        measure("dense (score_tree, no sharing)", k, tree(False))
        measure("prefix-shared (score_tree)", k, tree(True))
    return rows


def engine_rows(
    lm: LanguageModel, lists: list[list[list[int]]], concurrency: Sequence[int], seconds: float, gflops: float
) -> list[list]:
    """Clients each scoring one list at a time, as HTTP clients would (no HTTP)."""
    fpt = flops_per_token(lm)
    rows = []

    async def run(c: int) -> list:
        async with Engine(lm, EngineConfig(max_wait_ms=2)) as engine:
            stop = 0.0

            async def client(offset: int) -> int:
                i, done = offset, 0
                while time.perf_counter() < stop:
                    await engine.score(lists[i % len(lists)])
                    i += c
                    done += 1
                return done

            await asyncio.gather(*[engine.score(lists[i % len(lists)]) for i in range(c)])  # warm-up
            s0 = (
                engine.stats.positions_requested,
                engine.stats.positions_computed,
                engine.stats.kinds["score"].batches,
                engine.stats.kinds["score"].requests,
            )
            t0 = time.perf_counter()
            stop = t0 + seconds
            await asyncio.gather(*[client(i) for i in range(c)])
            elapsed = time.perf_counter() - t0
            req = engine.stats.positions_requested - s0[0]
            comp = engine.stats.positions_computed - s0[1]
            batches = engine.stats.kinds["score"].batches - s0[2]
            requests = engine.stats.kinds["score"].requests - s0[3]
            rate = comp / elapsed * fpt / 1e9
            return [
                f"engine, {c} concurrent clients",
                f"{requests / max(batches, 1):.1f} lists/batch",
                req / elapsed,
                comp / elapsed,
                comp / max(req, 1),
                rate,
                100 * rate / gflops,
            ]

    for c in concurrency:
        rows.append(asyncio.run(run(c)))
    return rows


def confusion_sets(size: int) -> dict[str, list[list[str]]]:
    """The reranking benchmark's homophone and word-order sets (pd98 test), when the data exists."""
    if not (DATA / "test.txt").exists():
        return {}
    from model.quality.confusion import build_set
    from model.quality.rerank import SetSpec, homophone_index
    from model.text.data import load_split

    heldout = load_split(DATA, "test")
    out = {}
    for kind in ("homophone", "wordorder"):
        spec = SetSpec(kind=kind, size=size)
        index = homophone_index(DATA, spec.min_count, "runs/rerank") if kind == "homophone" else None
        items = build_set(
            kind,
            heldout,
            index,
            size=spec.size,
            distractors=spec.distractors,
            seed=spec.seed,
            min_len=spec.min_len,
            max_len=spec.max_len,
        )
        out[f"{kind} 6-way (`{spec.name}`)"] = [it.candidates for it in items]
    return out


def sharing_rows(
    lm: LanguageModel, sets: dict[str, list[list[list[int]]]], k: int, seconds: float, device: str
) -> list[list]:
    rows = []
    for name, lists in sets.items():
        flat = [s for cands in lists for s in cands]
        dense = score_tree(lm, flat, share=False)
        shared = score_tree(lm, flat, share=True)
        diff = max(
            (
                float((a - b).abs().max())
                for a, b in zip(dense.logprobs, shared.logprobs, strict=True)
                if a.numel()
            ),
            default=0.0,
        )
        calls = [[s for cands in lists[i : i + k] for s in cands] for i in range(0, len(lists), k)]

        def timer(share: bool, calls=calls):
            it = iter(range(10**12))
            return lambda: score_tree(lm, calls[next(it) % len(calls)], share=share).requested

        d_units, d_s = timed_loop(timer(False), seconds, device)
        s_units, s_s = timed_loop(timer(True), seconds, device)
        rows.append(
            [
                name,
                len(lists),
                dense.requested,
                shared.computed,
                dense.requested / shared.computed,
                (s_units / s_s) / (d_units / d_s),
                diff,
            ]
        )
    return rows


def model_rows(
    m: BenchModel, texts: list[list[str]], args, seconds: float, gflops: float
) -> tuple[list[list], list[list], float]:
    """One model's library and engine rows, its sharing rows, and its largest |Δ log-prob|
    between prefix-shared scoring and ``sequence_logprobs``."""
    lm = m.lm
    lists = encode_lists(lm, texts)
    with torch.inference_mode():
        check = score_tree(lm, [s for c in lists[:16] for s in c])
        plain = lm.sequence_logprobs([s for c in lists[:16] for s in c])
    max_diff = max(float((a - b).abs().max()) for a, b in zip(check.logprobs, plain, strict=True))
    per_call = (1, 8) if args.quick else (1, 32, 128)
    concurrency = (1, 8) if args.quick else (1, 8, 32)
    rows = library_rows(lm, lists, per_call, seconds, args.device, gflops)
    rows += engine_rows(lm, lists, concurrency, seconds, gflops)
    sets = {"n-best 10 × ~20 chars (this workload)": lists}
    for name, cands in confusion_sets(20 if args.quick else args.set_size).items():
        sets[name] = encode_lists(lm, cands)
    share = sharing_rows(lm, sets, 8 if args.quick else 32, seconds, args.device)
    return [[m.name, *r] for r in rows], [[m.name, *r] for r in share], max_diff


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0], several_models=True)
    p.add_argument("--lists", type=int, default=256, help="n-best lists in the workload")
    p.add_argument("--set-size", type=int, default=500, help="items per confusion set")
    args = p.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 3.0)
    n_lists = 16 if args.quick else args.lists

    models = load_bench_models(args)
    probe = ceiling(args.device, min(seconds, 2.0))
    texts = nbest_lists(models[0].lm, n_lists)
    rows: list[list] = []
    share: list[list] = []
    diffs: list[str] = []
    for m in models:
        model_lib, model_share, diff = model_rows(m, texts, args, seconds, probe.before)
        rows += model_lib
        share += model_share
        diffs.append(f"`{m.name}` {diff:.2e}")
    probe.after = matmul_gflops(args.device, seconds=min(seconds, 2.0))
    for row in rows:  # ratios against the better of the two probe measurements
        row[7] = 100 * row[6] / probe.gflops
    by_model = {m.name: [r[1:] for r in rows if r[0] == m.name] for m in models}
    ratios = ratio_rows(by_model, lambda r: f"{r[0]}, {r[1]}", 2)

    lines = [
        models_header(
            "Library scoring (no HTTP)", args, models, probe, command_line("rnnlm.bench.scoring", argv)
        ),
        f"- workload: {n_lists} n-best lists of 10 candidates (~20 chars each, scored with <bos>/<eos>); "
        f"{seconds:g} s per row; prefix-shared vs `lm.sequence_logprobs`: max |Δ log-prob| = {', '.join(diffs)}",
        "",
        table(["model", *HEADERS], rows),
        "",
    ]
    if len(models) > 1:
        lines += [
            f"Requested tokens/s, {' vs '.join(f'`{m.name}`' for m in models)} (same run, same lists):",
            "",
            table(["workload", *(f"`{m.name}` tok/s" for m in models), "first ÷ last"], ratios),
            "",
        ]
    lines += [
        "Prefix sharing (positions requested = every candidate scored alone; computed = the trie bound; "
        f"speedup = prefix-shared vs dense tokens/s, {8 if args.quick else 32} lists per call):",
        "",
        table(
            [
                "model",
                "set",
                "lists",
                "positions requested",
                "positions computed",
                "requested / computed",
                "speedup",
                "max abs Δ log-prob",
            ],
            share,
        ),
        "",
    ]
    for m in models:
        best = max(r[7] for r in rows if r[0] == m.name and not r[1].startswith("engine"))
        lines.append(
            f"- `{m.name}`: target ≥ 85% of the matmul probe (best library row): {best:.0f}% — {mark(best >= 85)}"
        )
    text = "\n".join(lines)
    print(text)
    write_section("scoring", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
