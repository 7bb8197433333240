"""The prefix-state cache in the typing case: a user types a clause one character at a time and
each keystroke asks the engine for the next-token distribution of the whole text so far (the
autocomplete and input-method case), with the cache and without it, in the same run.

Each request goes alone (one user): positions are what the model ran for it (engine stats),
ms is the time from the call to the answer. Without the cache a request runs its whole prefix;
with it, one position. The largest difference between the two runs' log-probs is printed too
(see tests/model/test_state_cache.py for why they may differ in the last bits).

    .venv/bin/python -m rnnlm.bench.cache            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.cache --quick    # seconds: checks that it works
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence

import torch

from model.engine import Engine, EngineConfig
from model.lm import LanguageModel, RNNLanguageModel
from model.tokenizer import BOS_ID

from .common import (
    base_parser,
    clauses,
    command_line,
    load_bench_model,
    machine,
    percentile,
    resolve_out,
    table,
    write_section,
)

CACHE_BYTES = 32 * 1024 * 1024  # the service's default RNNLM_PREFIX_CACHE_BYTES


def typed_texts(count: int, min_len: int, max_len: int) -> list[str]:
    pool = clauses(min_len, max_len) or ["厨房里食油用完了，我们明天一起去超市买一些回来吧"]
    return [pool[i % len(pool)] for i in range(count)]


async def type_texts(
    lm: LanguageModel, texts: Sequence[str], cache_bytes: int
) -> tuple[list[float], list[int], list[int], list[torch.Tensor]]:
    """Per keystroke: seconds, positions computed, prefix length, and the next-token log-probs."""
    seconds, positions, lengths, dists = [], [], [], []
    config = EngineConfig(max_wait_ms=0, prefix_cache_bytes=cache_bytes)
    async with Engine(lm, config) as engine:
        await engine.next_token([[BOS_ID, *lm.tokenizer.encode("你好").ids]])  # warm-up
        for text in texts:
            ids = [BOS_ID, *lm.tokenizer.encode(text).ids]
            for n in range(2, len(ids) + 1):
                before = engine.stats.positions_computed
                t0 = time.perf_counter()
                [dist] = await engine.next_token([ids[:n]], top_k=10)
                seconds.append(time.perf_counter() - t0)
                positions.append(engine.stats.positions_computed - before)
                lengths.append(n)
                dists.append(dist.logprobs)
    return seconds, positions, lengths, dists


def summary(
    name: str, seconds: list[float], positions: list[int], lengths: list[int], long_from: int
) -> list:
    late = [s for s, n in zip(seconds, lengths, strict=True) if n >= long_from]
    return [
        name,
        len(seconds),
        sum(positions) / len(positions),
        1e3 * sum(seconds) / len(seconds),
        1e3 * percentile(seconds, 50),
        1e3 * percentile(seconds, 95),
        1e3 * sum(late) / len(late) if late else float("nan"),
    ]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        finite = torch.isfinite(x) & torch.isfinite(y)
        if not torch.equal(torch.isfinite(x), torch.isfinite(y)):
            return float("inf")
        worst = max(worst, float((x[finite] - y[finite]).abs().max()))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=30, help="clauses typed, one after another")
    p.add_argument("--min-len", type=int, default=24, help="characters of a typed clause, at least")
    p.add_argument("--max-len", type=int, default=40, help="characters of a typed clause, at most")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    count, min_len, max_len = (2, 12, 20) if args.quick else (args.texts, args.min_len, args.max_len)
    if args.threads:
        torch.set_num_threads(args.threads)

    lm, desc = load_bench_model(args)
    if not isinstance(lm, RNNLanguageModel):
        raise SystemExit("this benchmark needs an RNN checkpoint (the cache holds RNN states)")
    texts = typed_texts(count, min_len, max_len)
    plain = asyncio.run(type_texts(lm, texts, 0))
    cached = asyncio.run(type_texts(lm, texts, CACHE_BYTES))
    long_from = max(2, min_len)
    rows = [
        summary("no cache", *plain[:3], long_from),
        summary(f"prefix cache ({CACHE_BYTES >> 20} MiB)", *cached[:3], long_from),
    ]
    speedup = rows[0][3] / rows[1][3]
    headers = [
        "engine",
        "requests",
        "positions/request",
        "ms/request (mean)",
        "p50 ms",
        "p95 ms",
        f"mean ms, prefix ≥ {long_from - 1} chars",
    ]
    lines = [
        "### Prefix-state cache: typing one character at a time",
        "",
        f"- command: `{command_line('rnnlm.bench.cache', argv)}`"
        + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, device {args.device}; {machine()}",
        f"- model: {desc}",
        f"- workload: {count} clauses of {min_len}-{max_len} characters typed one character at a time; "
        "one /next-token-style engine request per keystroke (top_k 10, one user, no batching wait)",
        "",
        table(headers, rows),
        "",
        f"- with the cache: {speedup:.1f}× less time per request; largest log-prob difference between "
        f"the two runs: {max_difference(plain[3], cached[3]):.2g}",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("prefix-cache", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
