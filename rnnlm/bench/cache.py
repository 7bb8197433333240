"""The prefix-state cache in the typing case: a user types a clause one character at a time and
each keystroke asks the engine for the next-token distribution of the whole text so far (the
autocomplete and input-method case), with the cache and without it, in the same run.

Each request goes alone (one user): positions are what the model ran for it (engine stats),
ms is the time from the call to the answer. Without the cache a request runs its whole prefix;
with it, one position. The largest difference between the two runs' log-probs is printed too
(see tests/model/test_state_cache.py for why they may differ in the last bits).

    .venv/bin/python -m rnnlm.bench.cache            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.cache --quick    # seconds: checks that it works

``--tenants`` measures instead what the cache's timing tells one client about another's requests,
against a real ``python -m service`` with two API keys: the time of a long /next-token prefix that
nobody sent, that the same tenant sent just before, that another tenant sent just before, and that
the same tenant sent with another ``cache_salt`` (each prefix fresh per round)::

    .venv/bin/python -m rnnlm.bench.cache --tenants                      # 9,000 characters, 3 rounds
    .venv/bin/python -m rnnlm.bench.cache --tenants --quick              # seconds
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import torch

from model.inference.engine import Engine, EngineConfig
from model.models.lm import LanguageModel, RNNLanguageModel
from model.text.tokenizer import BOS_ID

from .common import (
    DATA,
    SHIPPED,
    base_parser,
    clauses,
    command_line,
    load_bench_model,
    machine,
    percentile,
    resolve_out,
    serve_process,
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


# -- what the cache's timing tells one tenant about another -------------------------------------------
TENANT_KEYS = ("bench-tenant-a", "bench-tenant-b")
TENANT_CASES = (  # (what is measured, the key that asks, its cache_salt)
    ("nobody sent this prefix", 0, None),
    ("the same tenant sent it just before", 0, None),
    ("another tenant sent it just before", 1, None),
    ("the same tenant, another cache_salt", 0, "another-salt"),
)


def long_texts(count: int, chars: int) -> list[str]:
    """``count`` different texts of ``chars`` characters: held-out pd98 text, else repeated clauses."""
    path = DATA / "test.txt"
    pool = path.read_text(encoding="utf-8").replace("\n", "") if path.exists() else ""
    if len(pool) < count * chars:
        pool = "".join(typed_texts(64, 12, 40)) * (count * chars // 600 + 1)
    return [pool[i * chars : (i + 1) * chars] for i in range(count)]


def time_tenants(base: str, texts: Sequence[str]) -> list[list[float]]:
    """Per case of TENANT_CASES, the seconds of each round's /next-token request (client side)."""
    seconds: list[list[float]] = [[] for _ in TENANT_CASES]
    with httpx.Client(base_url=base, timeout=600) as client:
        for text in texts:
            for i, (_, key, salt) in enumerate(TENANT_CASES):
                body = {"text": text, "top_k": 1, **({"cache_salt": salt} if salt else {})}
                t0 = time.perf_counter()
                r = client.post(
                    "/next-token", json=body, headers={"Authorization": f"Bearer {TENANT_KEYS[key]}"}
                )
                seconds[i].append(time.perf_counter() - t0)
                r.raise_for_status()
    return seconds


def tenants_main(args, argv: Sequence[str] | None) -> int:
    rounds, chars = (1, 300) if args.quick else (args.rounds, args.chars)
    model_dir = Path(args.model) if args.model and args.model != "untrained" else SHIPPED
    env = {
        "RNNLM_API_KEYS": ",".join(TENANT_KEYS),
        "RNNLM_DEVICE": args.device,
        "RNNLM_TORCH_THREADS": str(args.threads or 0),
        "RNNLM_REQUEST_TIMEOUT_S": "600",
        "RNNLM_LOG_LEVEL": "warning",
    }
    texts = long_texts(rounds, chars)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_process(model_dir, Path(tmp) / "server.log", env) as (base, _),
    ):
        httpx.post(  # warm-up: the first request pays one-time set-up
            f"{base}/next-token", json={"text": "你好"}, headers={"Authorization": f"Bearer {TENANT_KEYS[0]}"}
        ).raise_for_status()
        seconds = time_tenants(base, texts)
    cold = statistics.median(seconds[0])
    rows = [
        [case, len(s), 1e3 * statistics.median(s), 1e3 * min(s), 1e3 * max(s), statistics.median(s) / cold]
        for (case, _, _), s in zip(TENANT_CASES, seconds, strict=True)
    ]
    headers = ["the prefix", "requests", "median ms", "min ms", "max ms", "× nobody sent it"]
    lines = [
        "### Prefix-state cache: what its timing tells one tenant about another",
        "",
        f"- command: `{command_line('rnnlm.bench.cache', argv)}`"
        + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, device {args.device}; {machine()}",
        f"- server: `python -m service --model-dir {model_dir.name}`, two API keys (two tenants), the default "
        "32 MiB cache; client-side time of one /next-token request (top_k 1) per case and round",
        f"- workload: {rounds} round(s), each a fresh {chars:,}-character prefix of pd98 test text sent by "
        "the cases in this order",
        "",
        table(headers, rows),
        "",
        "- another tenant's request (and another `cache_salt`) takes as long as a prefix nobody sent: the "
        "cache tells it nothing. Before the cache was scoped by tenant (one scope per model), another tenant "
        "got the second row's time.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("prefix-cache-tenants", text, resolve_out(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=30, help="clauses typed, one after another")
    p.add_argument("--min-len", type=int, default=24, help="characters of a typed clause, at least")
    p.add_argument("--max-len", type=int, default=40, help="characters of a typed clause, at most")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tenants", action="store_true", help="measure what the timing tells another tenant")
    p.add_argument("--chars", type=int, default=9000, help="--tenants: characters of each prefix")
    p.add_argument("--rounds", type=int, default=3, help="--tenants: fresh prefixes, one per round")
    args = p.parse_args(argv)
    if args.tenants:
        return tenants_main(args, argv)
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
