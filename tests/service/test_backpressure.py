"""Backpressure, with ``rnnlm serve`` as a real process (issue 13, item 9): streams whose clients
never read pause their generation (their rows leave the decoding batch) and are ended after
``RNNLM_STREAM_STALL_S`` with their slots freed, while a client that reads goes on at full speed.

The clients that do not read are plain sockets with a small receive buffer that never call
``recv``: the server's send buffer fills, sending an event blocks, the route stops taking events
and the engine parks the rows.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .reliability_support import (
    free_port,
    metric,
    parse_sse,
    save_endless_model,
    spawn_server,
    stop,
    wait_ready,
)

STALL_S = 3.0
STEPS = 'rnnlm_batch_rows_count{kind="generate"}'  # decoding steps
ROWS = 'rnnlm_batch_rows_sum{kind="generate"}'  # rows advanced, summed over steps
STALLED = 'rnnlm_engine_rejected_total{kind="generate",reason="stalled"}'


@pytest.fixture(scope="module")
def endless_dir(tmp_path_factory) -> Path:
    return save_endless_model(tmp_path_factory.mktemp("models") / "endless")


def _serve(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = spawn_server(
        model_dir,
        log,
        port,
        RNNLM_MAX_NEW_TOKENS="1000000",
        RNNLM_SSE_PING_S="0",
        RNNLM_STREAM_STALL_S=str(STALL_S),
        RNNLM_STREAM_BACKLOG="8",
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_ready(proc, base):
        stop(proc)
        pytest.fail(f"rnnlm serve did not become ready:\n{log.read_text()[-3000:]}")
    return proc, base


def _non_reading_stream(port: int) -> socket.socket:
    """Opens an endless stream of 16 samples and never reads a byte of the answer."""
    body = json.dumps(
        {"prompt": "今天", "max_new_tokens": 1_000_000, "stream": True, "seed": 3, "n": 16}
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return sock


def _metrics(base: str) -> str:
    return httpx.get(f"{base}/metrics", timeout=30).text


def test_streams_not_read_pause_then_end_while_a_reader_goes_on(endless_dir, tmp_path):
    log = tmp_path / "server.log"
    proc, base = _serve(endless_dir, log)
    socks: list[socket.socket] = []
    try:
        port = int(base.rsplit(":", 1)[1])
        socks = [_non_reading_stream(port) for _ in range(2)]
        # 1. they generate until their connections' buffers are full, then take no decoding step
        start, last, still_since = time.monotonic(), -1.0, None
        while True:
            steps = metric(_metrics(base), STEPS)
            now = time.monotonic()
            if steps != last:
                last, still_since = steps, now
            elif now - still_since >= 1.0:
                break  # no decoding step for a second: both paused
            assert now - start < 60, "streams that nobody reads kept generating"
            time.sleep(0.2)
        paused_at = still_since
        text = _metrics(base)
        assert metric(text, "rnnlm_streams_open") == 2  # paused, not ended yet
        assert metric(text, STALLED) == 0
        # 2. a client that reads: its stream runs alone in the batch (the paused rows are out)
        steps0, rows0 = metric(text, STEPS), metric(text, ROWS)
        reading = {"prompt": "今天", "max_new_tokens": 200, "stream": True, "seed": 5}
        with httpx.stream("POST", f"{base}/generate", json=reading, timeout=30) as r:
            assert r.status_code == 200
            events = parse_sse("".join(r.iter_text()))
        assert events[-1][0] == "done" and events[-1][1]["num_tokens"] == 200
        text = _metrics(base)
        steps, rows = metric(text, STEPS) - steps0, metric(text, ROWS) - rows0
        assert steps == 200 and rows == 200  # one row per step: 32 paused rows took no step
        assert time.monotonic() - paused_at < STALL_S, "the reader was too slow to test within the stall"
        # 3. past the stall limit the silent streams end: slots freed, counted, logged
        while metric(text := _metrics(base), STALLED) < 2:
            assert time.monotonic() - paused_at < STALL_S + 20, "stalled streams were not ended"
            time.sleep(0.2)
        assert metric(text, "rnnlm_streams_open") == 0
        assert metric(text, 'rnnlm_admitted{model="endless"}') == 0
        assert metric(text, STEPS) == steps0 + steps  # and they took no step meanwhile
        ok = httpx.post(
            f"{base}/generate", json={"prompt": "今天", "max_new_tokens": 5, "seed": 1}, timeout=30
        )
        assert ok.status_code == 200
    finally:
        for sock in socks:
            sock.close()
        stop(proc)
    server_log = log.read_text()
    assert server_log.count("stream ended: its client read nothing") >= 2  # one line per stream at least
    assert "Traceback" not in server_log


# -- the engine's side, without a server: parked rows keep their state; a stall ends the stream ------
def test_a_reader_that_falls_behind_pauses_its_rows_and_gets_the_same_tokens(endless_dir):
    import asyncio

    from model.inference.engine import Engine, EngineConfig, EngineObserver
    from model.inference.engine.stream import StreamStalled
    from model.inference.generation import GenerationRequest, generate
    from model.inference.sampling import SamplingParams
    from model.models.loading import load_model

    lm = load_model(endless_dir)
    request = GenerationRequest("今天", max_new_tokens=40, sampling=SamplingParams(seed=9), n=2)
    rejected: list[str] = []

    class Observer(EngineObserver):
        def on_rejected(self, kind: str, reason: str) -> None:
            rejected.append(reason)

    async def main() -> None:
        async with Engine(lm, EngineConfig(threads=1, max_wait_ms=1), Observer()) as engine:
            stream = engine.generate(request)
            stream.max_backlog = 4  # events per sample: 8 for n = 2
            batches = engine.stats.kinds["generate"].batches
            for _ in range(100):  # nobody reads: the steps stop once 8 events wait
                await asyncio.sleep(0.05)
                if engine.stats.kinds["generate"].batches == batches and stream.paused_since is not None:
                    break
                batches = engine.stats.kinds["generate"].batches
            assert stream.paused_since is not None and stream.backlog == 8 and batches == 4
            assert engine.active_rows == 2  # parked, still held
            await asyncio.sleep(0.3)
            assert engine.stats.kinds["generate"].batches == batches  # no step while paused
            events = [ev async for ev in stream]  # reading resumes it, to the end
            for i, sample in enumerate(generate(lm, request)):
                assert [ev.token_id for ev in events if ev.sample == i] == sample.ids  # same tokens
            assert engine.active_rows == 0
            stalled = engine.generate(request)
            stalled.max_backlog, stalled.stall_s = 2, 0.3
            await asyncio.sleep(1.5)
            assert engine.active_rows == 0  # ended, its rows freed, without anyone reading
            got = []
            try:
                async for ev in stalled:
                    got.append(ev)
            except StreamStalled:
                pass
            else:
                raise AssertionError("a stalled stream must end with StreamStalled")
            assert len(got) == 4 and rejected == ["stalled"]

    asyncio.run(asyncio.wait_for(main(), 60))


# -- item 8 through the service: stop strings, bounded in size, held back by the engine ---------------
@pytest.fixture(scope="module")
def client(endless_dir):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(model_dirs=[str(endless_dir)], device="cpu", max_stop_bytes=20_000)
    with TestClient(create_app(settings)) as c:
        yield c


def test_stop_strings_larger_than_the_bound_are_422_naming_stop(client):
    fits = {"prompt": "今天", "max_new_tokens": 5, "stop": ["a" * 9_999, "b" * 9_999]}  # 19,998 bytes
    assert client.post("/generate", json=fits).status_code == 200
    r = client.post("/generate", json={**fits, "stop": [*fits["stop"], "好"]})  # + 3 bytes (UTF-8)
    err = r.json()["error"]
    assert r.status_code == 422 and err["field"] == "stop" and "RNNLM_MAX_STOP_BYTES" in err["message"]


def test_completions_bound_stop_strings_too(client):
    body = {"prompt": "今天", "max_tokens": 5, "stop": ["a" * 9_999, "b" * 9_999, "好"]}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop", r.text
    assert client.post("/v1/completions", json={**body, "stop": body["stop"][:2]}).status_code == 200


def test_streamed_text_with_long_and_spanning_stop_strings_adds_up_to_the_answer(client):
    for seed in range(4):
        free = client.post("/generate", json={"prompt": "今天", "max_new_tokens": 30, "seed": seed}).json()
        text = free["text"]
        stop = [text[3 : 6 + seed % 3], "\x00" + "天" * 2_000, text[:2] + "x" * 3_000]  # hit; never; begun
        body = {"prompt": "今天", "max_new_tokens": 30, "seed": seed, "stop": stop, "n": 2}
        plain = client.post("/generate", json=body).json()
        with client.stream("POST", "/generate", json={**body, "stream": True}) as r:
            events = parse_sse("".join(r.iter_text()))
        assert r.status_code == 200 and events[-1][0] == "done"
        done = events[-1][1]
        assert done["samples"] == plain["samples"]  # streamed or not, the same answer
        for sample in done["samples"]:
            shown = "".join(d["text"] for e, d in events if e == "token" and d["sample"] == sample["index"])
            assert shown == sample["text"]
        assert done["samples"][0]["finish_reason"] == "stop"  # sample 0 is the seed of ``free``
        assert done["samples"][0]["text"] == text[: text.index(stop[0])]
