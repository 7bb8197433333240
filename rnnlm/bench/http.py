"""HTTP benchmark against a real ``rnnlm serve`` process started here, on loopback, for the
served default model and the plain LSTM (one server each, in turn; their ratio last).

- ``/score`` throughput (tokens/s) with n-best lists of 10 candidates of ~20 characters at
  concurrency 1, 8 and 32, compared with the same lists through the library engine (no HTTP)
  measured in this run before the server starts: the HTTP overhead.
- p50/p95/p99 latency of ``/next-token`` (20-character prefixes, each sent once) and ``/score`` at
  concurrency 1 and 32, and where one ``/next-token`` request's time goes at concurrency 1: the
  server's ``Server-Timing`` stages (validation, tokenization, queue, model, top-k, ...), and HTTP
  (the client's latency less the server's total: socket, uvicorn, the client itself).
- Peak resident memory (RSS) of the server during each phase (sampled every 20 ms).

The client runs on the same machine (httpx, asyncio) and takes CPU from the server: on a 2-core
machine that is part of what is measured, as it is for any loopback benchmark.

    .venv/bin/python -m rnnlm.bench.http            # the full run, updates docs/BENCHMARKS.md
    .venv/bin/python -m rnnlm.bench.http --quick    # seconds: checks that it works
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from model.models.lm import RNNLanguageModel

from .common import (
    BenchModel,
    base_parser,
    ceiling,
    clauses,
    command_line,
    encode_lists,
    flops_per_token,
    load_bench_models,
    mark,
    matmul_gflops,
    models_header,
    nbest_lists,
    percentile,
    ratio_rows,
    resolve_out,
    serve_process,
    table,
    write_section,
)
from .scoring import engine_rows

PREFIX_CHARS = 20  # the /next-token latency target's prefix length (issue 14)


class RssSampler:
    """Peak VmRSS of a process, per phase, from /proc (Linux)."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def phase(self) -> float:
        """Peak MiB since the last call."""
        peak, self.peak = max(self.peak, self.rss()), 0
        return peak / 2**20

    def close(self) -> None:
        self._stop.set()


def server(model_dir: Path, device: str, log_path: Path):
    return serve_process(model_dir, log_path, {"RNNLM_DEVICE": device}, ready_timeout_s=600)


async def load(base: str, path: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients posting ``bodies`` in turn for ``seconds``."""
    latencies: list[float] = []
    timings: list[tuple[float, dict[str, float]]] = []  # (latency, Server-Timing stages) where sent
    statuses: dict[int, int] = {}
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        await asyncio.gather(*[client.post(path, json=bodies[i % len(bodies)]) for i in range(concurrency)])
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal tokens
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post(path, json=bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                if "server-timing" in r.headers:
                    timings.append((latencies[-1], server_timing_stages(r.headers["server-timing"])))
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200 and path == "/score":
                    tokens += sum(c["num_tokens"] for c in r.json()["results"])
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*[worker(k) for k in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return {
        "latencies": latencies,
        "timings": timings,
        "statuses": statuses,
        "tokens_s": tokens / elapsed,
        "requests_s": len(latencies) / elapsed,
    }


def server_timing_stages(header: str) -> dict[str, float]:
    """``{stage: seconds}`` from a ``Server-Timing`` header (``name;dur=<ms>, ...``)."""
    stages = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                stages[name] = float(value) / 1e3
    return stages


def breakdown(timings: list[tuple[float, dict[str, float]]]) -> list[list]:
    """Rows (stage, p50 ms, mean ms, % of the mean latency): ``http`` first (each request's latency
    less the server's ``total``), then the server's stages in their order; the means add up to the
    mean latency (the last row)."""
    if not timings:
        return []
    names = [n for n in timings[0][1] if n != "total"]
    per_stage: dict[str, list[float]] = {"http": [lat - st.get("total", 0.0) for lat, st in timings]}
    for n in names:
        per_stage[n] = [st.get(n, 0.0) for _, st in timings]
    # what the server did not name (the few statements between its stages) goes with its total
    per_stage["server, unnamed"] = [
        st.get("total", 0.0) - sum(st.get(n, 0.0) for n in names) for _, st in timings
    ]
    lat = [lat for lat, _ in timings]
    mean_lat = sum(lat) / len(lat)
    rows = [
        [name, 1e3 * percentile(v, 50), 1e3 * sum(v) / len(v), 100 * sum(v) / len(v) / mean_lat]
        for name, v in per_stage.items()
    ]
    return [*rows, ["latency (client)", 1e3 * percentile(lat, 50), 1e3 * mean_lat, 100.0]]


def trie_bound(lists: list[list[list[int]]]) -> float:
    """Mean positions computed per requested position when each list is scored alone."""
    req = sum(len(s) - 1 for cands in lists for s in cands)
    comp = sum(len({tuple(s[:i]) for s in cands for i in range(1, len(s))}) for cands in lists)
    return comp / req


@dataclass
class ModelRun:
    score_rows: list[list]  # per concurrency (model first)
    latency_rows: list[list]  # per endpoint and concurrency (model first)
    stages: list[list]  # where one /next-token request's time goes (concurrency 1)
    library_tokens_s: float  # the same lists through the library engine, no HTTP
    share: float  # computed positions per requested token (each list's trie bound)
    idle_mb: float  # the server's RSS before any request


def run_model(
    m: BenchModel, texts: list[list[str]], prefixes: list[str], args, seconds: float, gflops: float
) -> ModelRun:
    """One model: the library engine on the lists (before the server exists), then its server."""
    levels = (1, 8) if args.quick else (1, 8, 32)
    latency_levels = (1, 8) if args.quick else (1, 32)
    lm = m.lm
    fpt = flops_per_token(lm)
    ids = encode_lists(lm, texts)
    share = trie_bound(ids)
    library_tokens_s = engine_rows(lm, ids, [max(levels)], seconds, gflops)[0][2]
    stages: list[list] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = m.path
        if model_dir is None:  # untrained, in memory
            from model.models.checkpoint import save_rnn

            assert isinstance(lm, RNNLanguageModel)
            model_dir = save_rnn(Path(tmp) / "untrained", lm.net.cpu(), lm.tokenizer, {})
        log_path = Path(tmp) / "server.log"
        with server(model_dir, args.device, log_path) as (base, proc):
            rss = RssSampler(proc.pid)
            idle_mb = rss.phase()
            score_rows, latency_rows = [], []
            bodies = [{"candidates": c} for c in texts]
            for c in levels:
                r = asyncio.run(load(base, "/score", bodies, c, seconds))
                lat = r["latencies"]
                rate = r["tokens_s"] * share * fpt / 1e9
                score_rows.append(
                    [
                        m.name,
                        c,
                        r["requests_s"],
                        r["tokens_s"],
                        r["tokens_s"] / library_tokens_s,
                        rate,
                        100 * rate / gflops,
                        1e3 * percentile(lat, 50),
                        1e3 * percentile(lat, 95),
                        1e3 * percentile(lat, 99),
                        rss.phase(),
                        _statuses(r["statuses"]),
                    ]
                )
                if c in latency_levels:
                    row = score_rows[-1]
                    latency_rows.append([m.name, "/score", c, *row[7:10], r["requests_s"], row[10], row[11]])
            for c in latency_levels:
                nt = [{"text": t, "top_k": 10} for t in prefixes]
                r = asyncio.run(load(base, "/next-token", nt, c, seconds))
                lat = r["latencies"]
                if c == 1:
                    stages = breakdown(r["timings"])
                latency_rows.append(
                    [
                        m.name,
                        "/next-token",
                        c,
                        1e3 * percentile(lat, 50),
                        1e3 * percentile(lat, 95),
                        1e3 * percentile(lat, 99),
                        r["requests_s"],
                        rss.phase(),
                        _statuses(r["statuses"]),
                    ]
                )
            rss.close()
    return ModelRun(score_rows, latency_rows, stages, library_tokens_s, share, idle_mb)


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0], several_models=True)
    p.add_argument("--lists", type=int, default=256, help="n-best lists sent to /score")
    args = p.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 8.0)

    models = load_bench_models(args)
    probe = ceiling(args.device, min(seconds, 2.0))
    texts = nbest_lists(models[0].lm, 16 if args.quick else args.lists)
    # 20-character prefixes, each sent once per row (so a prefix-state cache has nothing to reuse)
    rng = random.Random(1)
    prefixes = [c[:PREFIX_CHARS] for c in clauses(PREFIX_CHARS, 60, limit=5000)]
    rng.shuffle(prefixes)
    prefixes = prefixes or ["今天天气很好，我们一起去公园散步吧好的"]
    runs = [run_model(m, texts, prefixes, args, seconds, probe.before) for m in models]
    probe.after = matmul_gflops(args.device, seconds=min(seconds, 2.0))
    score_rows = [row for run in runs for row in run.score_rows]
    latency_rows = [row for run in runs for row in run.latency_rows]
    for row in score_rows:
        row[6] = 100 * row[5] / probe.gflops

    lines = [
        models_header(
            "HTTP (`rnnlm serve` on loopback)", args, models, probe, command_line("rnnlm.bench.http", argv)
        ),
        f"- workload: {len(texts)} n-best lists of 10 candidates (~20 chars), POST /score "
        f'{{"candidates": [...]}}; /next-token {{"text": <{PREFIX_CHARS} chars>, "top_k": 10}} '
        f"({len(prefixes)} distinct prefixes); {seconds:g} s per row; one server per model, in turn; "
        "server idle RSS "
        + ", ".join(f"`{m.name}` {run.idle_mb:.0f} MiB" for m, run in zip(models, runs, strict=True)),
        "- library engine, same lists, the highest concurrency, no HTTP (this run): "
        + ", ".join(
            f"`{m.name}` {run.library_tokens_s:,.0f} tokens/s" for m, run in zip(models, runs, strict=True)
        ),
        f"- GFLOP/s assumes each list costs its own trie bound ({runs[0].share:.2f} computed positions per "
        "requested token); a server without prefix sharing computes more than that",
        "",
        table(
            [
                "model",
                "concurrency",
                "requests/s",
                "tokens/s",
                "× library",
                "GFLOP/s",
                "% of matmul",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "peak RSS MiB",
                "statuses",
            ],
            score_rows,
        ),
        "",
    ]
    by_model = {m.name: [r[1:] for r in score_rows if r[0] == m.name] for m in models}
    latency_by_model = {m.name: [r[1:] for r in latency_rows if r[0] == m.name] for m in models}
    if len(models) > 1:
        lines += [
            f"/score tokens/s and /next-token p50, {' vs '.join(f'`{m.name}`' for m in models)} (same run):",
            "",
            table(
                ["workload", *(f"`{m.name}`" for m in models), "first ÷ last"],
                ratio_rows(by_model, lambda r: f"/score tokens/s, concurrency {r[0]}", 2)
                + ratio_rows(latency_by_model, lambda r: f"{r[0]} p50 ms, concurrency {r[1]}", 2),
            ),
            "",
        ]
    lines += [
        "Latency:",
        "",
        table(
            [
                "model",
                "endpoint",
                "concurrency",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "requests/s",
                "peak RSS MiB",
                "statuses",
            ],
            latency_rows,
        ),
    ]
    for m, run in zip(models, runs, strict=True):
        if run.stages:
            lines += [
                "",
                f"Where one /next-token request's time goes, `{m.name}` (concurrency 1; the server's "
                "Server-Timing header, HTTP = the client's latency less the server's total):",
                "",
                table(["stage", "p50 ms", "mean ms", "% of mean latency"], run.stages),
            ]
    lines.append("")
    for m in models:
        top = [r for r in by_model[m.name] if r[0] == 32]
        if top:
            lines.append(
                f"- `{m.name}`: target /score at concurrency 32 ≥ 60% of the matmul probe on computed positions: "
                f"{top[0][5]:.1f}% — {mark(top[0][5] >= 60)} ({100 * top[0][3]:.0f}% of the library engine's rate)"
            )
        one = [r for r in latency_by_model[m.name] if r[0] == "/next-token" and r[1] == 1]
        if one:
            lines.append(
                f"- `{m.name}`: target /next-token p50 at concurrency 1, fresh {PREFIX_CHARS}-character prefix, "
                f"< 10 ms: {one[0][2]:.1f} ms — {mark(one[0][2] < 10)}"
            )
    if len(models) > 1:
        tops = [
            next((r[2] for r in by_model[m.name] if r[0] == 32), float("nan"))
            for m in (models[0], models[-1])
        ]
        if tops[0] == tops[0] and tops[1] == tops[1]:
            lines.append(
                f"- target: /score tokens/s at concurrency 32 of `{models[0].name}` ≥ 0.85× `{models[-1].name}`'s: "
                f"{tops[0] / tops[1]:.2f}× — {mark(tops[0] / tops[1] >= 0.85)}"
            )
    text = "\n".join(lines)
    print(text)
    write_section("http", text, resolve_out(args))
    return 0


def _statuses(counts: dict[int, int]) -> str:
    return " ".join(f"{code}×{n}" for code, n in sorted(counts.items()))


if __name__ == "__main__":
    raise SystemExit(main())
