"""Answers written outside the app's routes (issue 13): the protocol's own 408 (headers too slow)
and 503 (connection cap) carry a request id, in the body and the X-Request-ID header, like every
other answer; a started stream's final error event is sent within a bound even to a client that
reads nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import Message

from service.guard import Drain, RequestGuardMiddleware
from service.server import ConnectionLimits, ConnectionTracker, protocol_class

from .reliability_support import free_port

HEADER_TIMEOUT_S = 0.5
CAP = 2


async def _reads_its_body(scope, receive, send) -> None:
    """A minimal app: reads the whole body, answers 200."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """uvicorn with the service's protocol: a 0.5 s header timeout and a cap of 2 connections."""
    limits = ConnectionLimits(max_connections=CAP, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=30)
    tracker = ConnectionTracker(limits, registry=CollectorRegistry())
    number = free_port()
    config = uvicorn.Config(
        _reads_its_body, host="127.0.0.1", port=number, http=protocol_class(tracker), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield number
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _answer(sock: socket.socket, timeout_s: float = 5) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _id_of(answer: bytes) -> tuple[str | None, str | None]:
    """The request id of an answer: in its X-Request-ID header and in its error body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    header = re.search(rb"(?im)^x-request-id: *(\S+)\r?$", head)
    return (header.group(1).decode() if header else None), json.loads(body)["error"]["request_id"]


def test_the_408_for_slow_headers_carries_the_clients_request_id(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: trace-42.a\r\nAcce")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert _id_of(answer) == ("trace-42.a", "trace-42.a")


def test_the_408_gets_a_new_request_id_when_the_client_sent_none(port: int) -> None:
    ids = []
    for sent in (b"POST /sco", b"GET / HTTP/1.1\r\nX-Request-ID: bad id!\r\n"):  # none; not a valid one
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(sent)
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        header, body = _id_of(answer)
        assert header == body and body is not None and re.fullmatch("[0-9a-f]{32}", body)
        ids.append(body)
    assert ids[0] != ids[1]


def test_the_503_past_the_connection_cap_carries_a_request_id(port: int) -> None:
    busy = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CAP)]
    try:
        for sock in busy:  # each is receiving a body: none is idle, none can be closed for a new one
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            answer = _answer(extra)
    finally:
        for sock in busy:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 503 ")
    header, body = _id_of(answer)
    assert header == body and body is not None and re.fullmatch("[0-9a-f]{32}", body)


def test_a_streams_final_error_event_is_bounded_when_the_client_reads_nothing() -> None:
    async def stream_forever(scope, receive, send) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"event: token\r\n\r\n", "more_body": True})
        await asyncio.Event().wait()  # a generation that outlives its deadline

    sent: list[Message] = []
    blocked = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) > 2:  # the client stopped reading: the final event's send never completes
            blocked.set()
            await asyncio.Event().wait()

    requests: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client neither sends nor leaves
        return {"type": "http.disconnect"}

    guard = RequestGuardMiddleware(
        stream_forever, Drain(1.0), timeout_s=0.2, guarded_paths={"/generate"}, final_event_timeout_s=0.5
    )
    scope = {"type": "http", "path": "/generate", "method": "POST", "headers": []}

    async def run() -> float:
        t0 = time.monotonic()
        await asyncio.wait_for(guard(scope, receive, send), 10)  # the old guard waited for ever here
        return time.monotonic() - t0

    took = asyncio.run(run())
    assert blocked.is_set() and b"event: error" in sent[2]["body"]
    assert b'"type": "timeout"' in sent[2]["body"]
    assert 0.6 <= took < 5, took  # the deadline (0.2 s), then at most the bound (0.5 s) for the event
