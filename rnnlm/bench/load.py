"""Load test: a real ``rnnlm serve`` on loopback under mixed traffic at and beyond its capacity.

Traffic: /score (n-best lists), /next-token (batches), /generate (seeded) and streamed /generate,
from ``--concurrency`` asyncio clients, in three phases of ``--seconds`` each (and at most
``--max-requests`` requests each):

    at capacity          clients = RNNLM_MAX_IN_FLIGHT: every request should be admitted
    beyond capacity      clients = 4 × that: the excess must get 503 + Retry-After at once
    abandoning clients   clients = capacity; 30 % of them give up: streams closed after a few
                         events, other requests cut by a client-side timeout

Every answer is checked against its request: each body comes from a pool of distinct requests
whose answers were taken one at a time from the idle server first (scores to 1e-3, generations
exactly: same seed, same text), streamed tokens must add up to the ``done`` body, and the
``X-Request-ID`` sent must come back. After each phase the service's own gauges must show no
slot or stream still held. Memory: the server's RSS (from /proc) after a warm-up burst, after
each phase and at the end; it must not grow by more than ``--rss-bound-mib``.

Passes (exit 0) when: no 5xx other than 503 (overloaded) / 504 (deadline), no mixed-up or wrong
answer, no transport error or hang, no slot leaked, RSS within bound.

    .venv/bin/python -m rnnlm.bench.load                          # 3 × 60 s on the shipped model, updates
                                                            # docs/RELIABILITY.md
    .venv/bin/python -m rnnlm.bench.load --quick --model-dir DIR  # seconds (CI: tests/service/test_reliability_load.py)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .common import REPO, SHIPPED, parse_events, serve_process

DOC = REPO / "docs" / "RELIABILITY.md"
MIX = {"score": 0.40, "next_token": 0.25, "generate": 0.15, "stream": 0.20}
PATHS = {"score": "/score", "next_token": "/next-token", "generate": "/generate", "stream": "/generate"}

# Sentences to build distinct requests from (any text is valid input; these are in-vocabulary).
SUBJECTS = ["我们", "他们", "记者", "人民", "学生", "工人", "政府", "今天", "明天", "中国"]
VERBS = ["发表", "报道", "发展", "建设", "研究", "讨论", "支持", "参加", "完成", "提出"]
OBJECTS = [
    "新年讲话",
    "经济工作",
    "重要意见",
    "有关问题",
    "国际会议",
    "改革开放",
    "科学技术",
    "农业生产",
    "人民生活",
    "社会主义",
]


def sentences() -> list[str]:
    return [s + v + o for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)]


def request_pools(rng: random.Random, size: int) -> dict[str, list[dict]]:
    """Distinct request bodies per kind (a mix-up between two of them is detectable)."""
    texts = sentences()
    rng.shuffle(texts)
    it = itertools.cycle(texts)
    pools: dict[str, list[dict]] = {"score": [], "next_token": [], "generate": [], "stream": []}
    for i in range(size):
        cands = [next(it)[: rng.randint(4, 10)] for _ in range(rng.randint(2, 8))]
        pools["score"].append(
            {
                "candidates": cands,
                "per_token": i % 3 == 0,
                "external_scores": [round(rng.uniform(-5, 0), 3) for _ in cands] if i % 2 else None,
            }
        )
        pools["next_token"].append(
            {
                "text": [next(it)[: rng.randint(0, 8)] for _ in range(rng.randint(1, 4))],
                "top_k": rng.randint(1, 10),
            }
        )
        gen = {
            "prompt": next(it)[: rng.randint(0, 4)],
            "max_new_tokens": rng.randint(4, 24),
            "seed": i,
            "temperature": rng.choice([0.0, 0.7, 1.0]),
            "top_k": rng.choice([0, 20]),
            "n": rng.choice([1, 1, 2]),
            "return_logprobs": True,
        }
        pools["generate"].append(gen)
        pools["stream"].append({**gen, "stream": True})
    for pool in pools.values():
        for body in pool:
            for key in [k for k, v in body.items() if v is None]:
                del body[key]
    return pools


# -- the server -----------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server(model_dir: Path, capacity: int, log_path: Path, threads: int):
    return serve_process(
        model_dir,
        log_path,
        {
            "RNNLM_MAX_IN_FLIGHT": str(capacity),
            "RNNLM_MAX_STREAMS": str(capacity),
            "RNNLM_KEEP_ALIVE_S": "30",  # far beyond the clients' 2 s: no keep-alive race
            "RNNLM_TORCH_THREADS": str(threads),
            "RNNLM_SSE_PING_S": "0",
            "RNNLM_LOG_LEVEL": "warning",
        },
    )


# -- checking answers -----------------------------------------------------------------------------
def _close(a: float | None, b: float | None, tol: float = 1e-3) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def same_answer(kind: str, got: dict, ref: dict) -> bool:
    """Does ``got`` answer the same request as ``ref`` (taken from the idle server)?"""
    if kind == "score":
        rs, gs = ref["results"], got["results"]
        if len(rs) != len(gs) or sorted(got["ranking"]) != list(range(len(gs))):
            return False
        for r, g in zip(rs, gs, strict=True):
            if (
                (g["text"], g["num_tokens"], g["oov"]) != (r["text"], r["num_tokens"], r["oov"])
                or not _close(g["logprob"], r["logprob"])
                or not _close(g["score"], r["score"])
            ):
                return False
            if (r.get("token_logprobs") is None) != (g.get("token_logprobs") is None):
                return False
        scores = sorted((r["score"] for r in rs), reverse=True)
        clear = all(a - b > 1e-3 for a, b in itertools.pairwise(scores))
        return got["ranking"] == ref["ranking"] or not clear  # near-ties may swap under batching
    if kind == "next_token":
        if len(got["results"]) != len(ref["results"]):
            return False
        for g, r in zip(got["results"], ref["results"], strict=True):
            if (
                g["tokens"] != r["tokens"]
                or len(g["next"]) != len(r["next"])
                or not _close(g["entropy"], r["entropy"])
            ):
                return False
            if not all(_close(a["logprob"], b["logprob"]) for a, b in zip(g["next"], r["next"], strict=True)):
                return False
        return True
    keys = ("text", "finish_reason", "num_tokens", "seed", "prompt_tokens")
    return all(got[k] == ref[k] for k in keys) and [s["text"] for s in got["samples"]] == [
        s["text"] for s in ref["samples"]
    ]


def stream_matches(events: list[tuple[str, dict]], ref: dict, complete: bool) -> bool:
    """Token events agree with the reference sample by sample; a stream read to its end finishes
    with ``done`` equal to the reference, and each sample's streamed text adds up to its final text.
    (``complete=False``: the client left early, so the events may stop anywhere.)"""
    samples = {s["index"]: s for s in ref["samples"]}
    shown: dict[int, str] = {}
    for name, data in events:
        if name == "token":
            expected = samples[data["sample"]]["logprobs"]
            if data["index"] >= len(expected) or data["token"] != expected[data["index"]]["token"]:
                return False
            shown[data["sample"]] = shown.get(data["sample"], "") + data["text"]
        elif name == "done":
            return same_answer("generate", data, ref) and all(
                shown.get(i, "") == s["text"] for i, s in samples.items()
            )
        else:
            return False
    return not complete


# -- the clients ----------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    clients: int
    abandon: float = 0.0  # share of requests the client gives up on
    statuses: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, answered (200) requests
    refused_latencies: list[float] = field(default_factory=list)  # seconds, 503 answers
    mismatches: list[str] = field(default_factory=list)
    transport_errors: Counter = field(default_factory=Counter)
    missing_retry_after: int = 0
    abandoned: int = 0
    elapsed: float = 0.0
    leaked: str = ""
    rss_after: float = float("nan")

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.abandoned + sum(self.transport_errors.values())

    @property
    def crashes(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 and s not in (503, 504))


async def run_phase(
    base: str,
    phase: Phase,
    pools: dict,
    refs: dict,
    seconds: float,
    max_requests: int,
    rng: random.Random,
    client_timeout: float,
) -> None:
    kinds, weights = zip(*MIX.items(), strict=True)
    stop_at = time.monotonic() + seconds
    counter = itertools.count()
    # Idle connections are dropped by the client (2 s) before uvicorn drops them (5 s), so a request
    # never races the server's keep-alive timeout on a connection it is closing.
    limits = httpx.Limits(
        max_connections=phase.clients, max_keepalive_connections=phase.clients, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base, timeout=client_timeout, limits=limits) as client:

        async def one(seq: int) -> None:
            kind = rng.choices(kinds, weights)[0]
            i = rng.randrange(len(pools[kind]))
            body, ref = pools[kind][i], refs[kind][i]
            rid = f"load-{phase.name.replace(' ', '-')}-{seq}"
            abandon = rng.random() < phase.abandon
            phase.by_kind[kind] += 1
            t0 = time.monotonic()
            if abandon:  # a client of its own: a request cancelled mid-way can wedge a shared pool
                async with httpx.AsyncClient(base_url=base, timeout=client_timeout) as own:
                    await one_abandoned(own, kind, body, ref, rid, t0)
                return
            if kind == "stream":
                await one_stream(client, body, ref, rid, False, t0)
                return
            try:
                r = await client.post(PATHS[kind], json=body, headers={"X-Request-ID": rid})
            except httpx.TransportError as e:
                phase.transport_errors[f"{kind}: {type(e).__name__} {e}"] += 1
                return
            record(kind, r.status_code, r.headers, r.content, t0, rid, ref)

        async def one_abandoned(
            own: httpx.AsyncClient, kind: str, body: dict, ref: dict, rid: str, t0: float
        ) -> None:
            if kind == "stream":
                await one_stream(own, body, ref, rid, True, t0)
                return
            try:
                await asyncio.wait_for(
                    own.post(PATHS[kind], json=body, headers={"X-Request-ID": rid}),
                    timeout=rng.uniform(0.001, 0.05),
                )
            except TimeoutError:
                pass
            except httpx.TransportError as e:
                phase.transport_errors[f"{kind}: {type(e).__name__} {e}"] += 1
                return
            phase.abandoned += 1  # given up on (or answered before we gave up: fine, not checked)

        def record(
            kind: str, status: int, headers: httpx.Headers, content: bytes, t0: float, rid: str, ref: dict
        ) -> None:
            phase.statuses[status] += 1
            if headers.get("x-request-id") != rid:
                phase.mismatches.append(f"{kind}: X-Request-ID {headers.get('x-request-id')} != {rid}")
            if status == 200:
                phase.latencies.append(time.monotonic() - t0)
                if not same_answer(kind, json.loads(content), ref):
                    phase.mismatches.append(f"{kind} {rid}: the answer does not match its request")
            elif status == 503:
                phase.refused_latencies.append(time.monotonic() - t0)
                if not headers.get("retry-after"):
                    phase.missing_retry_after += 1

        async def one_stream(
            client: httpx.AsyncClient, body: dict, ref: dict, rid: str, abandon: bool, t0: float
        ) -> None:
            keep = rng.randint(1, 3)
            try:
                async with client.stream("POST", "/generate", json=body, headers={"X-Request-ID": rid}) as r:
                    if r.status_code != 200:
                        record("stream", r.status_code, r.headers, await r.aread(), t0, rid, ref)
                        return
                    raw, events = "", []
                    async for chunk in r.aiter_text():
                        raw = (raw + chunk).replace("\r\n", "\n")
                        if abandon and raw.count("\n\n") >= keep:
                            break
                    events = parse_events(raw[: raw.rfind("\n\n") + 2] if abandon else raw)
            except httpx.TransportError as e:
                phase.transport_errors[f"stream: {type(e).__name__} {e}"] += 1
                return
            if r.headers.get("x-request-id") != rid:
                phase.mismatches.append(f"stream: X-Request-ID {r.headers.get('x-request-id')} != {rid}")
            if abandon:
                phase.abandoned += 1
            else:
                phase.statuses[200] += 1
                phase.latencies.append(time.monotonic() - t0)
            if not stream_matches(events, ref, complete=not abandon):
                phase.mismatches.append(f"stream {rid}: events do not match the request")

        async def worker() -> None:
            while time.monotonic() < stop_at:
                seq = next(counter)
                if seq >= max_requests:
                    return
                await one(seq)

        t0 = time.monotonic()
        await asyncio.gather(*[worker() for _ in range(phase.clients)])
        phase.elapsed = time.monotonic() - t0


async def references(base: str, pools: dict) -> dict:
    """Each pooled request answered alone by the idle server."""
    refs: dict[str, list[dict]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for kind, pool in pools.items():
            if kind == "stream":
                continue
            refs[kind] = []
            for body in pool:
                r = await client.post(PATHS[kind], json=body)
                r.raise_for_status()
                refs[kind].append(r.json())
    refs["stream"] = refs["generate"]
    return refs


def held(base: str) -> tuple[float, float]:
    lines = httpx.get(f"{base}/metrics", timeout=30).text.splitlines()
    value = lambda prefix: sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))  # noqa: E731
    return value("rnnlm_admitted{"), value("rnnlm_streams_open ")


def wait_released(base: str, timeout_s: float = 15) -> str:
    """'' once no slot or stream is held; else what is still held."""
    deadline = time.monotonic() + timeout_s
    while True:
        admitted, streams = held(base)
        if admitted == 0 and streams == 0:
            return ""
        if time.monotonic() > deadline:
            return f"{admitted:g} slots, {streams:g} streams still held {timeout_s:g} s after the phase"
        time.sleep(0.1)


# -- report ---------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


def ms(x: float) -> str:
    return "–" if x != x else f"{x * 1000:.0f}"


def report(
    args: argparse.Namespace,
    phases: list[Phase],
    rss: dict[str, float],
    model: str,
    capacity: int,
    ok: dict[str, bool],
    command: str,
) -> str:
    rows = []
    for p in phases:
        other = {s: n for s, n in sorted(p.statuses.items()) if s not in (200, 503)}
        rows.append(
            f"| {p.name} | {p.clients} | {p.requests} | {p.statuses[200]} | {p.statuses[503]} | "
            f"{', '.join(f'{s}: {n}' for s, n in other.items()) or '0'} | {p.crashes} | {p.abandoned} | "
            f"{sum(p.transport_errors.values())} | {len(p.mismatches)} | "
            f"{ms(pct(p.latencies, 50))} / {ms(pct(p.latencies, 95))} / {ms(pct(p.latencies, 99))} | "
            f"{ms(pct(p.refused_latencies, 50))} / {ms(pct(p.refused_latencies, 99))} | "
            f"{p.statuses[200] / max(p.elapsed, 1e-9):.1f} |"
        )
    mark = lambda good: "yes" if good else "**NO**"  # noqa: E731
    lines = [
        "### Load test (bench/load.py)",
        "",
        f"- command: `{command}`"
        + ("  (**--quick: a smoke run, too short to be meaningful**)" if args.quick else ""),
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; model {model}; "
        f"RNNLM_MAX_IN_FLIGHT = RNNLM_MAX_STREAMS = {capacity}; {args.seconds:g} s per phase "
        f"(at most {args.max_requests} requests); client and server share the machine "
        f"({len(os.sched_getaffinity(0))} CPUs)",
        f"- mix: {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}; every answer checked against "
        f"the idle server's answer to the same request",
        "",
        "| phase | clients | requests | 200 | 503 | other 4xx/5xx | 5xx crashes | abandoned | transport "
        "errors | wrong answers | latency of 200s p50 / p95 / p99 (ms) | 503 p50 / p99 (ms) | answers/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- server RSS (MiB): after warm-up {rss['start']:.1f}; "
        + "; ".join(f"after {p.name} {p.rss_after:.1f}" for p in phases)
        + f"; growth {rss['end'] - rss['start']:+.1f} (bound {args.rss_bound_mib:g})",
        f"- no 5xx but 503/504: {mark(ok['no_crashes'])}; every answer matched its request: "
        f"{mark(ok['no_mismatch'])}; no transport error or hang: {mark(ok['no_transport'])}; "
        f"every 503 had Retry-After: {mark(ok['retry_after'])}; no slot or stream leaked: "
        f"{mark(ok['no_leak'])}; memory flat: {mark(ok['rss'])}",
    ]
    for p in phases:
        lines += [f"- {p.name}: {m}" for m in p.mismatches[:5]]
        lines += [f"- {p.name}: transport error × {n}: {e}" for e, n in p.transport_errors.items()]
        if p.leaked:
            lines.append(f"- {p.name}: {p.leaked}")
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    start, end = "<!-- bench:load:start -->", "<!-- bench:load:end -->"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Reliability\n"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    print(f"updated {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=SHIPPED)
    p.add_argument("--capacity", type=int, default=8, help="RNNLM_MAX_IN_FLIGHT and RNNLM_MAX_STREAMS")
    p.add_argument("--seconds", type=float, default=60, help="duration of each phase")
    p.add_argument("--max-requests", type=int, default=20_000, help="most requests per phase")
    p.add_argument("--pool", type=int, default=48, help="distinct requests per kind")
    p.add_argument("--threads", type=int, default=1, help="RNNLM_TORCH_THREADS of the server")
    p.add_argument("--rss-bound-mib", type=float, default=32.0, help="allowed RSS growth after warm-up")
    p.add_argument("--quick", action="store_true", help="4 s phases, small pools (a smoke run)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown file to update (default: {DOC.name}; none with --quick)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.pool = min(args.seconds, 4.0), min(args.pool, 12)
    out = args.out if args.out is not None else (None if args.quick else DOC)
    command = " ".join([".venv/bin/python -m rnnlm.bench.load", *(sys.argv[1:] if argv is None else argv)])
    rng = random.Random(args.seed)
    pools = request_pools(rng, args.pool)
    cap = args.capacity
    phases = [
        Phase("at capacity", cap),
        Phase("beyond capacity", 4 * cap),
        Phase("abandoning clients", cap, abandon=0.3),
    ]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rnnlm-load-{os.getpid()}.log"
    with server(args.model_dir, cap, log_path, args.threads) as (base, proc):
        print(f"server {base} (pid {proc.pid}); log {log_path}; taking reference answers ...", flush=True)
        refs = asyncio.run(references(base, pools))
        warm = Phase("warm-up", 4 * cap)
        asyncio.run(run_phase(base, warm, pools, refs, min(5.0, args.seconds), args.max_requests, rng, 120))
        wait_released(base)
        rss = {"start": rss_mib(proc.pid)}
        for phase in phases:
            print(f"{phase.name}: {phase.clients} clients for {args.seconds:g} s ...", flush=True)
            asyncio.run(run_phase(base, phase, pools, refs, args.seconds, args.max_requests, rng, 120))
            phase.leaked = wait_released(base)
            phase.rss_after = rss_mib(proc.pid)
        rss["end"] = rss_mib(proc.pid)
        alive = proc.poll() is None
    server_log = log_path.read_text(errors="replace")
    ok = {
        "no_crashes": all(ph.crashes == 0 for ph in phases) and alive and "Traceback" not in server_log,
        "no_mismatch": all(not ph.mismatches for ph in phases),
        "no_transport": all(not ph.transport_errors for ph in phases),
        "retry_after": all(ph.missing_retry_after == 0 for ph in phases),
        "no_leak": all(not ph.leaked for ph in phases),
        "rss": rss["end"] - rss["start"] <= args.rss_bound_mib,
    }
    text = report(args, phases, rss, str(args.model_dir.name), cap, ok, command)
    print(text)
    if out is not None:
        write_section(text, out)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "ok": ok,
                    "rss_mib": rss,
                    "phases": [
                        {
                            "name": ph.name,
                            "clients": ph.clients,
                            "requests": ph.requests,
                            "statuses": {str(k): v for k, v in ph.statuses.items()},
                            "crashes": ph.crashes,
                            "mismatches": ph.mismatches,
                            "transport_errors": dict(ph.transport_errors),
                            "abandoned": ph.abandoned,
                            "leaked": ph.leaked,
                            "by_kind": dict(ph.by_kind),
                        }
                        for ph in phases
                    ],
                },
                indent=2,
            )
        )
    if not all(ok.values()):
        print(f"FAILED: {[k for k, v in ok.items() if not v]}; server log: {log_path}", file=sys.stderr)
        return 1
    log_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
