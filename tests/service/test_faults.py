"""Faults, with ``rnnlm serve`` as a real process: broken checkpoints at startup (one line on stderr,
exit 1, no traceback), a client killed mid-stream (its slot is freed at once), and SIGTERM under
load (in-flight work finishes or ends cleanly within the grace period; exit 0).

The server serves a tiny model whose generations never end by themselves, so a stream lasts as
long as the test needs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from model.models.checkpoint import CONFIG, METRICS, TOKENIZER, WEIGHTS
from model.text.data import sha256_file

from .reliability_support import (
    free_port,
    metric,
    parse_sse,
    rnnlm_command,
    save_endless_model,
    spawn_server,
    stop,
    wait_ready,
)


# -- broken checkpoints at startup ---------------------------------------------------------------------
def _truncated(d: Path) -> str:
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:100])
    return "sha256"


def _tampered(d: Path) -> str:
    data = bytearray((d / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / WEIGHTS).write_bytes(bytes(data))
    return "truncated or was modified"


def _missing_weights(d: Path) -> str:
    (d / WEIGHTS).unlink()
    return "missing"


def _pickled(d: Path) -> str:
    torch.save({"embedding.weight": torch.zeros(3)}, d / WEIGHTS)  # a pickle, with a "matching" hash
    config = json.loads((d / CONFIG).read_text())
    config["weights_sha256"] = sha256_file(d / WEIGHTS)
    (d / CONFIG).write_text(json.dumps(config))
    return "not a valid safetensors file"


def _vocabulary_mismatch(d: Path) -> str:
    tok = json.loads((d / TOKENIZER).read_text(encoding="utf-8"))
    tok["tokens"] = tok["tokens"][:-1]
    (d / TOKENIZER).write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    return "vocabulary does not match"


def _no_directory(d: Path) -> str:
    shutil.rmtree(d)
    return "does not exist"


def _metrics_not_an_object(d: Path) -> str:
    (d / METRICS).write_text("[1]")  # once started, every GET /models was a 500
    return "must be a JSON object"


def _weights_fifo(d: Path) -> str:
    (d / WEIGHTS).unlink()
    os.mkfifo(d / WEIGHTS)  # opening it would block until a writer comes: startup hung
    return "not a regular file"


BROKEN = {
    "truncated": _truncated,
    "tampered": _tampered,
    "missing-weights": _missing_weights,
    "pickled": _pickled,
    "vocabulary-mismatch": _vocabulary_mismatch,
    "no-directory": _no_directory,
    "metrics-not-an-object": _metrics_not_an_object,
    "weights-fifo": _weights_fifo,
}


def test_each_broken_checkpoint_stops_startup_with_one_clear_line(tiny_model_dir, tmp_path):
    cases = {}
    for name, breaks in BROKEN.items():
        d = tmp_path / name
        shutil.copytree(tiny_model_dir, d)
        problem = breaks(d)
        cases[name] = (d, problem, _start(["--model-dir", str(d)], {}))
    cases["cuda-device"] = (
        None,
        "CUDA",
        _start(["--model-dir", str(tiny_model_dir)], {"RNNLM_DEVICE": f"cuda:{torch.cuda.device_count()}"}),
    )
    for name, (d, problem, proc) in cases.items():  # started together: each pays torch's import
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, f"{name}: exit {proc.returncode}\n{err}"
        assert "Traceback" not in err and "Traceback" not in out, f"{name}:\n{err}"
        [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert line.startswith("error: cannot start: ") and problem in line, f"{name}: {line}"
        if d is not None:
            assert str(d) in line, f"{name}: the line does not name the path: {line}"


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*rnnlm_command(), "--port", "0", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- a live server whose streams never end -------------------------------------------------------------
@pytest.fixture(scope="module")
def endless_dir(tmp_path_factory) -> Path:
    return save_endless_model(tmp_path_factory.mktemp("models") / "endless")


def _serve(endless_dir: Path, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = spawn_server(endless_dir, log, port, RNNLM_MAX_NEW_TOKENS="1000000", RNNLM_SSE_PING_S="0", **env)
    base = f"http://127.0.0.1:{port}"
    if not wait_ready(proc, base):
        stop(proc)
        pytest.fail(f"rnnlm serve did not become ready:\n{log.read_text()[-3000:]}")
    return proc, base


STREAM = {"prompt": "今天", "max_new_tokens": 1_000_000, "stream": True, "seed": 3}


def _raw_stream(port: int) -> socket.socket:
    """A client that opens a stream with a plain socket (so the test can kill it abruptly)."""
    body = json.dumps(STREAM).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def test_a_client_killed_mid_stream_frees_its_slot_at_once(endless_dir, tmp_path):
    proc, base = _serve(endless_dir, tmp_path / "server.log", RNNLM_MAX_IN_FLIGHT="1", RNNLM_MAX_STREAMS="1")
    try:
        port = int(base.rsplit(":", 1)[1])
        sock = _raw_stream(port)
        sock.recv(4096)  # a few events
        full = httpx.post(f"{base}/score", json={"candidates": ["你先走"]}, timeout=30)
        assert full.status_code == 503 and full.json()["error"]["type"] == "overloaded"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # SO_LINGER 0: the connection is reset, as when a client process is killed
        killed_at = time.monotonic()
        while httpx.post(f"{base}/score", json={"candidates": ["你先走"]}, timeout=30).status_code != 200:
            assert time.monotonic() - killed_at < 5, "the dead client's slot was not freed"
            time.sleep(0.02)
        text = httpx.get(f"{base}/metrics", timeout=30).text
        assert metric(text, 'rnnlm_admitted{model="endless"}') == 0
        assert metric(text, "rnnlm_streams_open") == 0
        assert metric(text, 'rnnlm_rejected_total{reason="disconnected"}') == 1
        assert stop(proc) == 0
    finally:
        stop(proc)
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_sigterm_under_load_finishes_or_ends_every_request_cleanly_and_exits_0(endless_dir, tmp_path):
    log = tmp_path / "server.log"
    proc, base = _serve(endless_dir, log, RNNLM_SHUTDOWN_GRACE_S="2", RNNLM_MAX_IN_FLIGHT="64")
    results: dict[str, list] = {"streams": [], "requests": []}

    def long_stream() -> None:  # never finishes by itself: must be ended by the drain
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{base}/generate", json=STREAM) as r:
            results["streams"].append((r.status_code, parse_sse(r.read().decode())))

    def short_requests() -> None:  # each finishes quickly: those in flight at SIGTERM must finish
        with httpx.Client(timeout=60) as c:
            for i in range(1000):
                try:
                    r = c.post(f"{base}/score", json={"candidates": [f"你先走{i}", "你走先"]})
                except httpx.TransportError:  # refused once the server has stopped listening
                    results["requests"].append(("refused", None))
                    return
                results["requests"].append((r.status_code, r.json()))

    threads = [threading.Thread(target=long_stream) for _ in range(3)]
    threads += [threading.Thread(target=short_requests) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = proc.wait(timeout=30)
    took = time.monotonic() - signalled
    for t in threads:
        t.join(timeout=30)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert took < 2 + 5, f"shutdown took {took:.1f} s with a 2 s grace period"
    assert "Traceback" not in text
    assert len(results["streams"]) == 3
    for status, events in results["streams"]:
        assert status == 200 and events[0][0] == "token"
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "shutting_down"
    statuses = [s for s, _ in results["requests"]]
    assert statuses.count(200) > 0
    assert set(statuses) <= {200, 503, "refused"}, statuses  # never a 5xx crash, never a cut answer
    for status, body in results["requests"]:
        if status == 503:
            assert body["error"]["type"] == "shutting_down"
