"""Connections and request bodies under abuse (issue 13, items 1 and 2), against ``rnnlm serve`` as a
real process on loopback: idle and half-sent connections are closed after the header timeout, a
cap on open connections makes room by closing idle ones (or refuses at once when all are busy),
a stalled body gets 408, the bytes of bodies held across connections are bounded, and the
process's open-file limit is raised to its hard limit. Short timeouts come from the environment."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .reliability_support import REPO, free_port, metric, rnnlm_command, stop, wait_ready

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
CAP = 50
MAX_BODY = 100_000
MAX_BUFFERED = 250_000
CHILD_NOFILE = 1024  # the soft open-file limit the capped server starts with (its hard limit is higher)


def _spawn(
    model_dir: Path, log: Path, env: dict[str, str], soft_nofile: int | None = None
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environ = {**os.environ, "RNNLM_TORCH_THREADS": "1", **env}
    cmd = [*rnnlm_command(), "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(model_dir)]

    def lower_nofile() -> None:
        if soft_nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_nofile, hard))

    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lower_nofile
        )
    if not wait_ready(proc, f"http://127.0.0.1:{port}"):
        stop(proc)
        pytest.fail(f"rnnlm serve did not become ready:\n{log.read_text()[-3000:]}")
    return proc, port


@pytest.fixture(scope="module")
def timed(tiny_model_dir, tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """A server with 1 s header and body timeouts."""
    log = tmp_path_factory.mktemp("timed") / "server.log"
    env = {"RNNLM_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "RNNLM_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    proc, port = _spawn(tiny_model_dir, log, env)
    try:
        yield port, log
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def capped(tiny_model_dir, tmp_path_factory) -> Iterator[tuple[int, Path, subprocess.Popen]]:
    """A server with a cap of 50 connections, a small body budget and long timeouts, started with a
    soft open-file limit below its hard limit."""
    log = tmp_path_factory.mktemp("capped") / "server.log"
    env = {
        "RNNLM_MAX_CONNECTIONS": str(CAP),
        "RNNLM_HEADER_TIMEOUT_S": "60",
        "RNNLM_BODY_TIMEOUT_S": "60",
        "RNNLM_MAX_BODY_BYTES": str(MAX_BODY),
        "RNNLM_MAX_BUFFERED_BODY_BYTES": str(MAX_BUFFERED),
    }
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = CHILD_NOFILE if hard == resource.RLIM_INFINITY or hard > CHILD_NOFILE else None
    proc, port = _spawn(tiny_model_dir, log, env, soft_nofile=soft)
    try:
        yield port, log, proc
    finally:
        stop(proc)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it; fails the
    test when the connection is still open after ``timeout_s``."""
    start = time.monotonic()
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {timeout_s} s; it sent {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def _closed_by_server(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has closed (readable: at their end, reset, or answered)."""
    readable, _, _ = select.select(sockets, [], [], 0)
    return len(readable)  # none of them sent a request: readable means the server closed it


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _json_body(answer: bytes) -> dict:
    _, _, body = answer.partition(b"\r\n\r\n")
    return json.loads(body)


def _metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


HALF_SENT = [
    b"",  # nothing at all
    b"POST /sco",  # half a request line
    b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Ty",  # half the headers
]


@pytest.mark.parametrize("sent", HALF_SENT, ids=["nothing", "half a request line", "half the headers"])
def test_idle_and_half_sent_connections_are_closed_after_the_header_timeout(timed, sent):
    port, _ = timed
    with _connect(port) as sock:
        sock.sendall(sent)
        answer, waited = _read_until_closed(sock, timeout_s=HEADER_TIMEOUT_S + 4)
    assert waited < HEADER_TIMEOUT_S + 3
    if sent:  # a started request is told why
        assert answer.startswith(b"HTTP/1.1 408 ")
        error = _json_body(answer)["error"]
        assert error["status"] == 408 and "RNNLM_HEADER_TIMEOUT_S" in error["message"]
    else:
        assert answer == b""


def test_a_kept_alive_connection_that_half_sends_its_next_request_is_closed(timed):
    port, _ = timed
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # trickled headers must not hold it open
        time.sleep(0.5)
        sock.sendall(b"st: x\r\n")
        answer, _ = _read_until_closed(sock, timeout_s=HEADER_TIMEOUT_S + 4)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert metric(_metrics(port), 'rnnlm_connections_closed_total{reason="header_timeout"}') >= 1


def test_a_stalled_body_gets_408_naming_the_setting_and_the_connection_is_closed(timed):
    port, _ = timed
    with _connect(port) as sock:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"candidates": ["'
            + b"a" * 100
        )
        answer, waited = _read_until_closed(sock, timeout_s=BODY_TIMEOUT_S + 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert waited < BODY_TIMEOUT_S + 4
    error = _json_body(answer)["error"]
    assert error["type"] == "timeout" and error["field"] == "body"
    assert "RNNLM_BODY_TIMEOUT_S" in error["message"] and error["request_id"]
    # and a request that sends its body at once is unaffected
    ok = httpx.post(f"http://127.0.0.1:{port}/score", json={"candidates": ["a b", "b a"]}, timeout=30)
    assert ok.status_code == 200


def test_the_open_file_limit_is_raised_to_the_hard_limit(capped):
    _, _, proc = capped
    limits = Path(f"/proc/{proc.pid}/limits").read_text()
    [line] = [x for x in limits.splitlines() if x.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def test_idle_connections_past_the_cap_make_room_and_health_stays_fast(capped):
    port, log, _ = capped
    before = metric(_metrics(port), 'rnnlm_connections_closed_total{reason="evicted"}')
    sockets = [_connect(port) for _ in range(4 * CAP)]  # 200 connections that never send anything
    try:
        time.sleep(0.5)
        start = time.monotonic()
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200 and time.monotonic() - start < 1.0
        time.sleep(0.3)
        closed = _closed_by_server(sockets)
        # all but the newest CAP - 1 idle ones (the health check took the last place) were closed
        assert closed >= 3 * CAP, closed
        evicted = metric(_metrics(port), 'rnnlm_connections_closed_total{reason="evicted"}') - before
        assert evicted >= 3 * CAP
    finally:
        for s in sockets:
            s.close()
    warnings = [line for line in log.read_text().splitlines() if "idle connection closed" in line]
    assert 1 <= len(warnings) <= 3, f"{len(warnings)} warnings: the log is not rate-limited"


def _half_body(port: int, declared: int, sent: int) -> socket.socket:
    sock = _connect(port)
    sock.sendall(
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(declared).encode()
        + b"\r\n\r\n"
        + b" " * sent
    )
    return sock


def test_when_every_connection_is_busy_a_new_one_is_refused_at_once(capped):
    port, _, _ = capped
    time.sleep(0.5)  # the previous test's sockets are gone
    busy = [_half_body(port, 1000, 10) for _ in range(CAP)]  # each is receiving a body
    try:
        time.sleep(0.5)
        with _connect(port) as extra:
            answer, waited = _read_until_closed(extra, timeout_s=5)
        assert waited < 2
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in answer.lower()
        assert "RNNLM_MAX_CONNECTIONS" in _json_body(answer)["error"]["message"]
    finally:
        for s in busy:
            s.close()
    time.sleep(0.5)
    assert metric(_metrics(port), 'rnnlm_connections_closed_total{reason="refused"}') >= 1


def test_bodies_held_across_connections_are_bounded(capped):
    port, _, _ = capped
    time.sleep(0.5)
    base = f"http://127.0.0.1:{port}"
    padded = b'{"candidates": ["a b", "b a"]}' + b" " * (MAX_BODY - 100)  # valid JSON of ~100 kB
    held = [_half_body(port, MAX_BODY, MAX_BODY // 2) for _ in range(2)]  # 200 kB of 250 kB reserved
    try:
        time.sleep(0.5)
        refused = httpx.post(f"{base}/score", content=padded, headers={"Content-Type": "application/json"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["field"] == "body" and "RNNLM_MAX_BUFFERED_BODY_BYTES" in error["message"]
        small = httpx.post(f"{base}/score", json={"candidates": ["a b", "b a"]}, timeout=30)
        assert small.status_code == 200  # a small body still fits
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)  # their reservations are given back when their requests end
    again = httpx.post(
        f"{base}/score", content=padded, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert again.status_code == 200, again.text


def test_accept_failures_are_counted_and_logged_at_most_once_per_interval(caplog):
    """What flooded the log (a traceback per failed accept() when file descriptors ran out) is one
    line per interval, and every failure is counted."""
    import asyncio
    import logging

    from prometheus_client import CollectorRegistry

    from service.server import ConnectionLimits, ConnectionTracker

    registry = CollectorRegistry()
    tracker = ConnectionTracker(ConnectionLimits(10, 1.0, 1.0), registry=registry)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="rnnlm.service"):
            for _ in range(1000):
                context = {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "EMFILE"),
                }
                tracker.exception_handler(loop, context)
    finally:
        loop.close()
    assert registry.get_sample_value("rnnlm_connections_closed_total", {"reason": "accept_failed"}) == 1000
    lines = [r for r in caplog.records if "socket.accept()" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None


def test_each_connection_gets_a_small_send_buffer(timed):
    """RNNLM_SEND_BUFFER_BYTES (64 KiB): a stream whose client stops reading blocks within kilobytes,
    so its generation pauses (service/streaming.py); the kernel default grows to megabytes."""
    import re
    import shutil

    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the server socket's buffer")
    port, _ = timed
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)
        shown = subprocess.run(
            ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
        ).stdout
    sizes = [int(m) for m in re.findall(r"\btb(\d+)", shown)]
    assert sizes, shown
    assert all(size <= 2 * 65_536 for size in sizes), shown  # Linux doubles what is set
