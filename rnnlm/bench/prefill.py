"""A long prompt's prefill beside other clients (issue 25, case 6), against a real ``python -m
service``: a 10,000-character /generate prompt, and

1. while its prefill runs, another client's small requests to the same model (/next-token of 20
   characters, /score of two candidates, /generate of 2 tokens from a 2-character prompt) and
   /health, one after another: their latency;
2. its client leaves after 0.5 s: how long a second client's prompt of the same length then
   takes, against the same prompt on an idle model. A prefill that runs on for nobody makes the
   second one wait for it; a stopped one does not.

::

    .venv/bin/python -m rnnlm.bench.prefill                     # pd98-char-lstm, 10,000 characters
    .venv/bin/python -m rnnlm.bench.prefill --model weights/pd98-char-hybrid
    .venv/bin/python -m rnnlm.bench.prefill --quick             # seconds: checks that it works
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from .cache import long_texts
from .common import (
    SHIPPED,
    base_parser,
    command_line,
    machine,
    percentile,
    resolve_out,
    serve_process,
    table,
    write_section,
)

SMALL = {
    "/next-token": {"text": "中华人民共和国成立以来，我们的国家发", "top_k": 5},
    "/score": {"candidates": ["我们明天去公园散步", "我们明天去公园散布"]},
    "/generate": {"prompt": "今天", "max_new_tokens": 2, "seed": 1},
}


def long_generate(base: str, prompt: str, timeout_s: float | None = None) -> float:
    """Seconds of one /generate of ``prompt`` (1 new token); with ``timeout_s`` the client leaves then."""
    t0 = time.perf_counter()
    with contextlib.suppress(httpx.TimeoutException):  # the client left
        httpx.post(
            f"{base}/generate",
            json={"prompt": prompt, "max_new_tokens": 1, "seed": 1},
            timeout=timeout_s or 600,
        ).raise_for_status()
    return time.perf_counter() - t0


def beside_a_prefill(base: str, prompt: str) -> tuple[float, dict[str, list[float]]]:
    """The long prefill's seconds, and each small request's seconds while it ran."""
    latencies: dict[str, list[float]] = {path: [] for path in [*SMALL, "/health"]}
    took: list[float] = []
    runner = threading.Thread(target=lambda: took.append(long_generate(base, prompt)))
    with httpx.Client(base_url=base, timeout=600) as client:
        runner.start()
        time.sleep(0.3)  # the prefill has started
        while runner.is_alive():
            for path, body in [*SMALL.items(), ("/health", None)]:
                t0 = time.perf_counter()
                r = client.get(path) if body is None else client.post(path, json=body)
                if runner.is_alive():  # only what ran while the prefill did
                    latencies[path].append(time.perf_counter() - t0)
                r.raise_for_status()
        runner.join()
    return took[0], latencies


def after_a_client_leaves(base: str, prompts: Sequence[str], leave_s: float) -> tuple[float, float]:
    """(seconds of a prompt on an idle model, seconds of one sent as another client left its own)."""
    alone = long_generate(base, prompts[0])
    long_generate(base, prompts[1], timeout_s=leave_s)  # its client leaves
    return alone, long_generate(base, prompts[2])


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--chars", type=int, default=10_000, help="characters of the long prompt")
    p.add_argument("--leave-s", type=float, default=0.5, help="when the leaving client leaves")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    args = p.parse_args(argv)
    chars = 400 if args.quick else args.chars
    model_dir = Path(args.model) if args.model and args.model != "untrained" else SHIPPED
    env = {
        "RNNLM_DEVICE": args.device,
        "RNNLM_TORCH_THREADS": str(args.threads or 0),
        "RNNLM_REQUEST_TIMEOUT_S": "600",
        "RNNLM_LOG_LEVEL": "warning",
        "RNNLM_PREFIX_CACHE_BYTES": "0",  # every prompt is fresh anyway; no cache in the way
    }
    prompts = long_texts(4, chars)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_process(model_dir, Path(tmp) / "server.log", env) as (base, _),
    ):
        for path, body in SMALL.items():  # warm-up: first requests pay one-time set-up
            httpx.post(f"{base}{path}", json=body, timeout=60).raise_for_status()
        took, latencies = beside_a_prefill(base, prompts[3])
        alone, after = after_a_client_leaves(base, prompts, args.leave_s)
    rows = [
        [path, len(s), 1e3 * percentile(s, 50), 1e3 * percentile(s, 99), 1e3 * max(s, default=float("nan"))]
        for path, s in latencies.items()
    ]
    lines = [
        "### A long prompt's prefill beside other clients",
        "",
        f"- command: `{command_line('rnnlm.bench.prefill', argv)}`"
        + ("  (**--quick: too short to be meaningful**)" if args.quick else ""),
        f"- run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, device {args.device}; {machine()}",
        f"- server: `python -m service --model-dir {model_dir.name}` (chunks of RNNLM_ENGINE_CHUNK_POSITIONS, "
        f"1024); a /generate of a {chars:,}-character prompt (pd98 test text), 1 new token",
        "",
        f"1. Another client's requests, one after another, while that prefill ran ({took:.1f} s):",
        "",
        table(["request", "requests", "p50 ms", "p99 ms", "max ms"], rows),
        "",
        f"2. Its client leaves after {args.leave_s:g} s; another client's prompt of the same length, sent "
        f"then, took **{after:.1f} s**, against {alone:.1f} s on an idle model ({after / alone:.2f}×). Had the "
        f"abandoned prefill run on for nobody, the second would have waited for it: about "
        f"{alone + max(0.0, alone - args.leave_s):.1f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(f"prefill-{model_dir.name}", text, resolve_out(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
