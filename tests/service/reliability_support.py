"""Helpers of the reliability, fault and load tests: a model that never stops generating, a real
uvicorn server in a thread or in a child process on a free port, and a server-sent-events reader."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from model.models.checkpoint import save_rnn
from model.text.tokenizer import EOS_ID
from rnnlm.bench.common import parse_events

from ..conftest import build_tiny_model

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_endless_model(out: Path) -> Path:
    """The tiny fixture model with P(<eos>) ~ 0: a generation always runs to ``max_new_tokens``,
    so a stream lasts as long as a test needs it to."""
    net, tok = build_tiny_model()
    with torch.no_grad():
        net.decoder.bias[EOS_ID] = -1e4
    return save_rnn(out, net, tok, {"note": "tiny model that never ends a sentence"})


@contextlib.contextmanager
def server_thread(app, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (no signal handlers); yields the base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def rnnlm_command() -> list[str]:
    return [str(Path(sys.executable).parent / "rnnlm"), "serve"]


def spawn_server(model_dir: Path, log: Path, port: int, **env: str) -> subprocess.Popen:
    """``rnnlm serve`` as a child process; its output goes to ``log`` (a file: a full pipe would block)."""
    environ = {**os.environ, "RNNLM_TORCH_THREADS": "1", **env}
    cmd = [*rnnlm_command(), "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(model_dir)]
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, base: str, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


parse_sse = parse_events  # (event, data) pairs of a text/event-stream body: the one SSE reader


def metric(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels, as printed) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
