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
    .venv/bin/python -m rnnlm.bench.load --attack connections --attack slow-bodies   # issue 13's attacks
    .venv/bin/python -m rnnlm.bench.load --attack completion-rows --attack completion-answers   # issue 25's
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import math
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
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


# -- attacks (issue 13): abuse that stays inside every limit, while a probe times the service -----
# Each attack runs alone against the server for ``--attack-seconds``; meanwhile a probe times
# GET /health (every 20 ms) and a small request (every 200 ms: a /score, or for the attacks in
# SMALL_PROBES another client's /generate) on fresh connections, and the server's RSS is sampled
# every 50 ms. "after" is the RSS once the attack's connections are closed
# and the server had ATTACK_SETTLE_S to let go. Another attack is one more entry in ATTACKS.
ATTACK_SETTLE_S = 3.0
QUICK_ATTACK_S = 6.0  # each attack's duration with --quick (a smoke run, not the figures to publish)
SMALL_SCORE = {"candidates": ["我们发表", "他们报道"]}
SMALL_GENERATE = {"prompt": "我们", "max_new_tokens": 2, "seed": 1}
SMALL_PROBES = {  # the small request each attack is judged by, if not a /score
    "completion-rows": ("/generate", SMALL_GENERATE),
    "completion-answers": ("/generate", SMALL_GENERATE),
}
ATTACK_BOUNDS = {"health_p99_s": 0.1, "score_p99_s": 1.0, "rss_after_mib": 100.0}  # issue 13, "Done when"


@dataclass
class Attack:
    name: str
    what: str = ""  # what the attacker did, for the report
    health: list[float] = field(default_factory=list)  # seconds per /health probe
    score: list[float] = field(default_factory=list)  # seconds per small request probe (/score, /generate)
    probe_failures: Counter = field(default_factory=Counter)  # status or error of failed probes
    rss_before: float = float("nan")
    rss_peak: float = float("nan")
    rss_after: float = float("nan")
    log_bytes: int = 0  # server log written during the attack
    server_cpu_s: float = 0.0  # CPU time the server used during the attack (user + system)
    outcome: Counter = field(default_factory=Counter)  # what the attacker's connections saw

    def ok(self) -> dict[str, bool]:
        b = ATTACK_BOUNDS
        return {
            "health": pct(self.health, 99) < b["health_p99_s"],
            "score": pct(self.score, 99) < b["score_p99_s"],
            "probes": not self.probe_failures,
            "rss": self.rss_after - self.rss_before <= b["rss_after_mib"],
        }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _set_own_nofile(soft: int | None) -> None:
    """This process's soft open-file limit (None: its hard limit); a server started now inherits it."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, top) if soft else top, hard))


async def _probe(
    base: str, attack: Attack, stop: asyncio.Event, small: tuple[str, dict] = ("/score", SMALL_SCORE)
) -> None:
    async def timed(client: httpx.AsyncClient, method: str, path: str, into: list[float], **kw) -> None:
        t0 = time.monotonic()
        try:
            r = await client.request(method, path, **kw)
            if r.status_code != 200:
                attack.probe_failures[f"{path} {r.status_code}"] += 1
                return
        except httpx.HTTPError as e:
            attack.probe_failures[f"{path} {type(e).__name__}"] += 1
            return
        into.append(time.monotonic() - t0)

    async def loop(every_s: float, method: str, path: str, into: list[float], **kw) -> None:
        # a fresh connection per probe: a new client must get through, not only a kept-alive one
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
            while not stop.is_set():
                await timed(client, method, path, into, **kw)
                await asyncio.sleep(every_s)

    await asyncio.gather(
        loop(0.02, "GET", "/health", attack.health),
        loop(0.2, "POST", small[0], attack.score, json=small[1]),
    )


def _probe_process(base: str, stop, results, ready=None, small=("/score", SMALL_SCORE)) -> None:
    """The probes in a process of their own: the attackers' clients keep this process's event loop
    busy (a 990 kB body at a time), and a probe that waited for them would time the client.
    ``ready`` is set once the probes run: the attack starts then (a spawned process takes seconds
    to import on a busy machine, which a short attack would otherwise spend unprobed)."""
    attack = Attack("probe")

    async def main() -> None:
        local = asyncio.Event()
        if ready is not None:
            ready.set()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.01)
            local.set()

        await asyncio.gather(watch(), _probe(base, attack, local, small))

    asyncio.run(main())
    results.put((attack.health, attack.score, dict(attack.probe_failures)))


async def _sample_rss(pid: int, attack: Attack, stop: asyncio.Event) -> None:
    while not stop.is_set():
        attack.rss_peak = max(attack.rss_peak, rss_mib(pid))
        await asyncio.sleep(0.05)


async def attack_connections(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 1: ``n`` connections, opened at once, that send nothing, half a request line or
    half the headers, and wait."""
    sent = [b"", b"POST /sco", b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Ty"]
    attack.what = f"{n} connections sending nothing, half a request line or half the headers"

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        writer.write(sent[i % 3])
        answer = await _answer_or_stop(reader, stop)
        if answer is not None:
            attack.outcome[f"closed by server{' with ' + answer[9:12].decode() if answer else ''}"] += 1
        else:
            attack.outcome["still open at the end"] += 1

    await asyncio.gather(*[_raw_connection(port, attack, one, i) for i in range(n)])


async def _raw_connection(
    port: int, attack: Attack, talk: Callable[..., Awaitable[None]], *args: object
) -> None:
    """Open a plain TCP connection to the server, ``talk(reader, writer, *args)`` on it, close it;
    a refused connect and a reset are counted as the attack's outcomes."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        attack.outcome[f"connect failed: {e.strerror or type(e).__name__}"] += 1
        return
    try:
        await talk(reader, writer, *args)
    except OSError:
        attack.outcome["reset by server"] += 1
    finally:
        writer.close()


async def _answer_or_stop(reader: asyncio.StreamReader, stop: asyncio.Event) -> bytes | None:
    """The server's first bytes (b"" when it closed silently), or None if the attack ended first."""
    waiting = asyncio.ensure_future(reader.read(4096))
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([waiting, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if waiting in done:
        return waiting.result()
    waiting.cancel()
    return None


async def attack_slow_bodies(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 2: ``n`` connections each declaring a body of 999,000 bytes, sending 998,916 of
    them (in 64 kB writes) and stalling."""
    declared, sent = 999_000, 998_916
    attack.what = f"{n} connections each sending {sent:,} of a declared {declared:,} bytes, then stalling"
    chunk = b" " * 65536

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
        )
        left = sent
        while left > 0 and not stop.is_set():
            writer.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
            await writer.drain()
        answer = await _answer_or_stop(reader, stop)
        if answer is not None:
            attack.outcome[f"answered {answer[9:12].decode() or 'nothing'}"] += 1
        else:
            attack.outcome["still held at the end"] += 1

    await asyncio.gather(*[_raw_connection(port, attack, one) for _ in range(n)])


async def _stream_seconds(client: httpx.AsyncClient, body: dict, attack: Attack, label: str) -> float | None:
    """Seconds to read one streamed /generate to its ``done`` event (None: it did not end so)."""
    t0 = time.monotonic()
    try:
        async with client.stream("POST", "/generate", json={**body, "stream": True}) as r:
            raw = (await r.aread()).decode()
    except httpx.HTTPError as e:
        attack.outcome[f"{label}: {type(e).__name__}"] += 1
        return None
    done = r.status_code == 200 and parse_events(raw)[-1][0] == "done"
    attack.outcome[f"{label}: {r.status_code}{'' if done else ' without done'}"] += 1
    return time.monotonic() - t0 if done else None


async def attack_stop_strings(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 8: rounds of ``n`` concurrent seeded streams (1024 tokens) with 16 stop strings
    of 9,999 characters, each round after the same ``n`` streams without stop strings."""
    stops = [chr(ord("a") + i) * 9_999 for i in range(16)]  # as in the issue (159,984 bytes together)
    body = {"prompt": "今天", "max_new_tokens": 1024, "seed": 7, "temperature": 1.0}
    plain: list[float] = []
    with_stops: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        while not stop.is_set():
            for into, extra, label in (
                (plain, {}, "no stop"),
                (with_stops, {"stop": stops}, "16 × 9,999-char stops"),
            ):
                times = await asyncio.gather(
                    *[
                        _stream_seconds(client, {**body, "seed": 7 + i, **extra}, attack, label)
                        for i in range(n)
                    ]
                )
                into += [t for t in times if t is not None]
    p, w = pct(plain, 50), pct(with_stops, 50)
    attack.what = (
        f"rounds of {n} concurrent streams of 1024 tokens, 16 stop strings of 9,999 characters or none: "
        f"median stream {w:.2f} s with the stop strings, {p:.2f} s without (x{w / p:.2f}; "
        f"{len(with_stops)} + {len(plain)} streams)"
    )


STALLED_METRIC = 'rnnlm_engine_rejected_total{kind="generate",reason="stalled"}'


async def attack_silent_streams(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 9: ``n`` streams (16 samples, as many tokens as RNNLM_MAX_NEW_TOKENS allows)
    whose clients never read (4 kB receive buffers), while a client that reads times a 200-token
    stream again and again. Their answers must outgrow the connections' buffers (megabytes on
    loopback): run it on a model that does not end its sentences (see docs/RELIABILITY.md)."""
    import socket

    base = f"http://127.0.0.1:{port}"
    tokens = int(os.environ.get("RNNLM_MAX_NEW_TOKENS", "1024"))  # the server's limit (it inherits it)
    body = json.dumps(
        {"prompt": "今天", "max_new_tokens": tokens, "stream": True, "seed": 3, "n": 16}
    ).encode()
    reading = {"prompt": "今天", "max_new_tokens": 200, "seed": 5}
    steps = 'rnnlm_batch_rows_sum{kind="generate"}'

    def rows_advanced(text: str) -> float:
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(steps + " ")), 0.0)

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        idle = [
            t for t in [await _stream_seconds(client, reading, attack, "idle reader") for _ in range(3)] if t
        ]
        socks = []
        for _ in range(n):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            sock.send(
                b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            socks.append(sock)
        t0 = time.monotonic()
        busy: list[float] = []
        timeline = []  # (seconds, rows advanced so far, streams open)
        text = ""
        try:
            while not stop.is_set():
                t = await _stream_seconds(client, reading, attack, "reader during")
                if t is not None:
                    busy.append(t)
                text = (await client.get("/metrics")).text
                open_ = next(
                    (x.split()[-1] for x in text.splitlines() if x.startswith("rnnlm_streams_open ")), "?"
                )
                timeline.append((time.monotonic() - t0, rows_advanced(text), open_))
                await asyncio.sleep(0.5)
        finally:
            for sock in socks:
                sock.close()
    rows = [(t, r) for t, r, _ in timeline]
    last_move = max((t for (t, r), (_, r0) in zip(rows[1:], rows, strict=False) if r > r0 + 264), default=0.0)
    ended = next((f"{t:.0f} s" for t, _, o in timeline if o == "0.0"), "not within the attack")
    stalled = next((x.split()[-1] for x in text.splitlines() if x.startswith(STALLED_METRIC + " ")), "0")
    attack.what = (
        f"{n} streams (16 samples × {tokens} tokens) whose clients never read; a reading client's 200-token "
        f"stream: median {pct(idle, 50):.2f} s idle, {pct(busy, 50):.2f} s meanwhile ({len(busy)} streams); "
        f"generation for the silent streams last advanced at {last_move:.0f} s; all streams closed at "
        f"{ended}; ended as stalled (rnnlm_engine_rejected_total): {stalled}"
    )


# -- costly requests inside the limits (issue 13 items 3-5) -------------------------------------------
def _long_texts(rng: random.Random, n: int, chars: int) -> list[str]:
    """``n`` distinct texts of ``chars`` in-vocabulary characters (little prefix to share)."""
    alphabet = sorted(set("".join(sentences())))
    return [str(i) + "".join(rng.choice(alphabet) for _ in range(chars - len(str(i)))) for i in range(n)]


async def _one_char_score_ms(base: str) -> str:
    """A 1-character /score on a fresh connection, timed: how soon the engine is free again."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        r = await client.post("/score", json={"candidates": ["我"]})
    return f"{(time.monotonic() - t0) * 1000:.0f} ms ({r.status_code})"


async def _costly_clients(
    port: int, attack: Attack, stop: asyncio.Event, bodies: list[tuple[str, dict]], give_up_s: float
) -> None:
    """Each body from its own client, again and again, until ``stop``; a client gives up after
    ``give_up_s`` (closing its connection). Outcomes by status; the engine's recovery after."""
    base = f"http://127.0.0.1:{port}"
    json_type = {"Content-Type": "application/json"}

    async def one(path: str, body: dict) -> None:
        content = json.dumps(body, ensure_ascii=False).encode()  # once: the client is not what is measured
        async with httpx.AsyncClient(base_url=base, timeout=give_up_s) as client:
            while not stop.is_set():
                try:
                    r = await client.post(path, content=content, headers=json_type)
                    attack.outcome[f"{path} {r.status_code}"] += 1
                    await asyncio.sleep(0.1)
                except httpx.TimeoutException:
                    attack.outcome[f"{path} gave up after {give_up_s:g} s"] += 1
                except httpx.HTTPError as e:
                    attack.outcome[f"{path} {type(e).__name__}"] += 1
                    await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(one(path, body)) for path, body in bodies]
    await stop.wait()
    for task in tasks:
        task.cancel()  # a client gone mid-request: the server must drop its work
    await asyncio.gather(*tasks, return_exceptions=True)
    attack.what += f"; a 1-character /score sent as they left: {await _one_char_score_ms(base)}"


async def attack_costly(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 3: ``n`` clients; half send 33 candidates × 10,000 characters (990 kB, past the
    tokens per request: 413), half 6 × 10,000 (60,012 tokens: within it, so the tokens in flight
    decide), each waiting up to 90 s for its answer."""
    rng = random.Random(13)
    huge = {"candidates": _long_texts(rng, 33, 10_000)}
    big = [{"candidates": _long_texts(rng, 6, 10_000)} for _ in range(n)]
    attack.what = f"{n} clients: {n - n // 2} × 33 candidates × 10,000 chars, {n // 2} × 6 × 10,000 chars"
    bodies = [("/score", huge if i % 2 == 0 else big[i]) for i in range(n)]
    await _costly_clients(port, attack, stop, bodies, 90.0)


async def attack_abandoned(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 4: ``n`` clients each sending 6 candidates × 10,000 characters and giving up
    (closing the connection) after 1 s, again and again."""
    rng = random.Random(14)
    bodies = [("/score", {"candidates": _long_texts(rng, 6, 10_000)}) for _ in range(n)]
    attack.what = f"{n} clients each sending 6 candidates × 10,000 chars and leaving after 1 s"
    await _costly_clients(port, attack, stop, bodies, 1.0)


async def attack_huge_answers(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 13 item 5: ``n`` clients; half ask /next-token for 256 one-character texts × top_k 1000
    (past RNNLM_MAX_NEXT_TOKEN_ENTRIES: 413), half for the most allowed, 16 texts × top_k 1000."""
    alphabet = sorted(set("".join(sentences())))
    too_many = {"text": alphabet[:256], "top_k": 1000}
    allowed = {"text": alphabet[:16], "top_k": 1000}
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        size = len((await client.post("/next-token", json=allowed)).content)
    attack.what = (
        f"{n} clients: {n - n // 2} × 256 texts × top_k 1000, {n // 2} × 16 texts × top_k 1000 "
        f"(an answer of {size / 1e6:.1f} MB)"
    )
    bodies = [("/next-token", too_many if i % 2 == 0 else allowed) for i in range(n)]
    await _costly_clients(port, attack, stop, bodies, 60.0)


# -- /v1/completions inside the limits (issue 25 items 1-2) ------------------------------------------
async def attack_completion_rows(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 25 item 1: ``n`` clients; half send the issue's completion (256 one-character prompts ×
    n 16 × max_tokens 1024: 4.2 M tokens to generate, past RNNLM_MAX_REQUEST_TOKENS: 413), half the
    largest within it (4 prompts × n 16 × 1000 tokens: 64 samples, run in turns of
    RNNLM_MAX_REQUEST_ROWS), while the probe times another client's 2-token /generate."""
    huge = {"prompt": ["我"] * 256, "n": 16, "max_tokens": 1024, "seed": 1}
    allowed = {"prompt": ["我们", "他们", "今天", "中国"], "n": 16, "max_tokens": 1000, "seed": 2}
    attack.what = (
        f"{n} clients: {n - n // 2} × 256 prompts × n 16 × max_tokens 1024, {n // 2} × 4 prompts × n 16 × "
        "max_tokens 1000; probe: another client's 2-token /generate"
    )
    bodies = [("/v1/completions", huge if i % 2 == 0 else allowed) for i in range(n)]
    await _costly_clients(port, attack, stop, bodies, 120.0)


async def attack_completion_answers(port: int, attack: Attack, stop: asyncio.Event, n: int) -> None:
    """Issue 25 item 2: ``n`` clients; half send the issue's echo (256 prompts of 100 characters,
    n 16, echo, logprobs 20, max_tokens 0: 8.6 M log-probs, past RNNLM_MAX_LOGPROB_ENTRIES: 413),
    half the largest answer within the limits (124 such prompts, n 1: 260,400 log-probs)."""
    texts = _long_texts(random.Random(25), 256, 100)
    huge = {"prompt": texts, "n": 16, "echo": True, "logprobs": 20, "max_tokens": 0}
    allowed = {"prompt": texts[:124], "echo": True, "logprobs": 20, "max_tokens": 0}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        size = len((await client.post("/v1/completions", json=allowed)).content)
    attack.what = (
        f"{n} clients: {n - n // 2} × 256 prompts × 100 chars × n 16 with echo and logprobs 20, {n // 2} × 124 "
        f"prompts × 100 chars (an answer of {size / 1e6:.1f} MB); probe: another client's 2-token /generate"
    )
    bodies = [("/v1/completions", huge if i % 2 == 0 else allowed) for i in range(n)]
    await _costly_clients(port, attack, stop, bodies, 120.0)


ATTACKS = {
    "costly": attack_costly,
    "abandoned": attack_abandoned,
    "huge-answers": attack_huge_answers,
    "connections": attack_connections,
    "slow-bodies": attack_slow_bodies,
    "stop-strings": attack_stop_strings,
    "silent-streams": attack_silent_streams,
    "completion-rows": attack_completion_rows,
    "completion-answers": attack_completion_answers,
}
# streams per attack (the others: --attack-connections / --attack-bodies)
ATTACK_N = {
    "stop-strings": 8,
    "silent-streams": 4,
    "costly": 8,
    "abandoned": 12,
    "huge-answers": 8,
    "completion-rows": 2,
    "completion-answers": 4,
}


async def run_attack(base: str, proc, name: str, seconds: float, n: int, log_path: Path) -> Attack:
    attack = Attack(name)
    port = int(base.rsplit(":", 1)[1])
    attack.rss_before = attack.rss_peak = rss_mib(proc.pid)
    log_start = log_path.stat().st_size
    cpu_start = cpu_seconds(proc.pid)
    stop = asyncio.Event()
    ctx = multiprocessing.get_context("spawn")
    probe_stop, probe_results, probe_ready = ctx.Event(), ctx.Queue(), ctx.Event()
    small = SMALL_PROBES.get(name, ("/score", SMALL_SCORE))
    prober = ctx.Process(
        target=_probe_process, args=(base, probe_stop, probe_results, probe_ready, small), daemon=True
    )
    prober.start()
    await asyncio.to_thread(probe_ready.wait, 120)
    tasks = [
        asyncio.ensure_future(_sample_rss(proc.pid, attack, stop)),
        asyncio.ensure_future(ATTACKS[name](port, attack, stop, n)),
    ]
    await asyncio.sleep(seconds)
    stop.set()
    probe_stop.set()
    await asyncio.gather(*tasks)
    attack.health, attack.score, failures = await asyncio.to_thread(probe_results.get, True, 60)
    attack.probe_failures.update(failures)
    await asyncio.to_thread(prober.join, 10)
    await asyncio.sleep(ATTACK_SETTLE_S)
    attack.rss_after = rss_mib(proc.pid)
    attack.server_cpu_s = cpu_seconds(proc.pid) - cpu_start
    attack.log_bytes = log_path.stat().st_size - log_start
    return attack


def attack_report(attacks: list[Attack], seconds: float, server_nofile: int, command: str) -> str:
    b = ATTACK_BOUNDS
    lines = [
        "### Attacks (bench/load.py --attack)",
        "",
        f"- command: `{command}`",
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; {seconds:g} s per attack, default "
        f"settings, the server started with a soft open-file limit of {server_nofile or 'its hard limit'}; client, server (and any other work on the machine) share {len(os.sched_getaffinity(0))} CPUs; "
        f"bounds: /health p99 < {b['health_p99_s'] * 1000:g} ms, small /score (/generate for completion-*) "
        f"p99 < {b['score_p99_s']:g} s, "
        f"RSS after within {b['rss_after_mib']:g} MiB of before",
        "",
        "| attack | /health p50 / p99 / max (ms) | small /score or /generate p50 / p99 / max (ms) | failed probes | RSS before / "
        "peak / after (MiB) | server CPU (s) | server log written | the attacker's connections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in attacks:
        outcome = ", ".join(f"{k}: {v}" for k, v in a.outcome.most_common(4))
        failures = ", ".join(f"{k}: {v}" for k, v in a.probe_failures.most_common(3)) or "0"
        lines.append(
            f"| {a.name}: {a.what} | {ms(pct(a.health, 50))} / {ms(pct(a.health, 99))} / "
            f"{ms(max(a.health, default=float('nan')))} | {ms(pct(a.score, 50))} / {ms(pct(a.score, 99))} / "
            f"{ms(max(a.score, default=float('nan')))} | {failures} | {a.rss_before:.0f} / {a.rss_peak:.0f} / "
            f"{a.rss_after:.0f} | {a.server_cpu_s:.1f} | {a.log_bytes / 1024:.1f} kB | {outcome} |"
        )
    mark = lambda good: "yes" if good else "**NO**"  # noqa: E731
    for a in attacks:
        ok = a.ok()
        lines.append(
            f"- {a.name}: /health p99 in bound: {mark(ok['health'])}; small request p99 in bound: {mark(ok['score'])}; "
            f"every probe answered 200: {mark(ok['probes'])}; memory returned: {mark(ok['rss'])}"
        )
    return "\n".join(lines)


def write_attack_section(text: str, path: Path) -> None:
    from model.text.data import write_text_atomically

    from ..reports.blocks import put_block

    write_text_atomically(path, put_block(path.read_text(encoding="utf-8"), "bench:attacks", text))
    print(f"updated {path}")


def run_attacks(args: argparse.Namespace, out: Path | None, command: str) -> int:
    """``--attack NAME`` (repeatable): each attack in turn against one fresh server, then the report."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rnnlm-attack-{os.getpid()}.log"
    env_log = {"RNNLM_LOG_LEVEL": "info"}  # the default: the log must stay small under attack
    attacks = []
    _set_own_nofile(args.attack_server_nofile)  # inherited by the server: a host's default `ulimit -n`
    with serve_process(args.model_dir, log_path, {"RNNLM_TORCH_THREADS": str(args.threads), **env_log}) as (
        base,
        proc,
    ):
        _set_own_nofile(None)  # the attacker's own sockets
        print(f"server {base} (pid {proc.pid}); log {log_path}", flush=True)
        httpx.post(f"{base}/score", json=SMALL_SCORE, timeout=60).raise_for_status()  # warm
        for name in args.attack:
            n = ATTACK_N.get(name) or (
                args.attack_connections if name == "connections" else args.attack_bodies
            )
            print(f"attack {name}: {n} connections for {args.attack_seconds:g} s ...", flush=True)
            attacks.append(asyncio.run(run_attack(base, proc, name, args.attack_seconds, n, log_path)))
    text = attack_report(attacks, args.attack_seconds, args.attack_server_nofile, command)
    print(text)
    if out is not None:
        write_attack_section(text, out)
    failed = [f"{a.name}: {k}" for a in attacks for k, good in a.ok().items() if not good]
    if failed:
        print(f"FAILED: {failed}; server log: {log_path}", file=sys.stderr)
        return 1
    log_path.unlink(missing_ok=True)
    return 0


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
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"4 s phases, small pools; attacks of {QUICK_ATTACK_S:g} s (a smoke run)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown file to update (default: {DOC.name}; none with --quick)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--attack",
        action="append",
        choices=sorted(ATTACKS),
        default=[],
        help="run this attack (repeatable) instead of the mixed phases; report in docs/RELIABILITY.md",
    )
    p.add_argument("--attack-seconds", type=float, default=15.0, help="duration of each attack")
    p.add_argument(
        "--attack-connections", type=int, default=6000, help="connections of the connection attack"
    )
    p.add_argument("--attack-bodies", type=int, default=1000, help="connections of the slow-body attack")
    p.add_argument(
        "--attack-server-nofile",
        type=int,
        default=1024,
        help="soft open-file limit the attacked server starts with (a common default; 0: the hard limit)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.pool = min(args.seconds, 4.0), min(args.pool, 12)
        args.attack_seconds = min(args.attack_seconds, QUICK_ATTACK_S)
    out = args.out if args.out is not None else (None if args.quick else DOC)
    command = " ".join([".venv/bin/python -m rnnlm.bench.load", *(sys.argv[1:] if argv is None else argv)])
    if args.attack:
        return run_attacks(args, out, command)
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
