"""Costly requests inside every other limit (issue 13, items 3-5): admission by cost (413 per
request, 503 for the tokens in flight), work a gone client leaves behind stops within one chunk,
and /next-token's answer is bounded and built off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from model.models.lm import RNNLanguageModel
from service.app import create_app
from service.settings import Settings

from .reliability_support import server_thread

ERROR_KEYS = {"type", "message", "field", "status", "request_id"}


def error_of(response: Any, status: int, field: str | None) -> dict:  # httpx's or TestClient's
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == ERROR_KEYS and err["status"] == status and err["field"] == field
    assert field is None or f"`{field}`" in err["message"]
    return err


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    settings = Settings(
        model_dirs=[str(tiny_model_dir)],
        max_text_chars=60,
        max_request_tokens=200,
        max_tokens_in_flight=400,
        max_top_k=20,
        max_next_token_entries=40,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_request_costing_more_tokens_than_allowed_gets_413_naming_the_field(client: TestClient) -> None:
    err = error_of(client.post("/score", json={"candidates": ["今天天气很好" * 8] * 5}), 413, "candidates")
    assert "250 tokens" in err["message"] and "200" in err["message"]  # 5 × (48 + <bos> + <eos>)
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"]
    err = error_of(client.post("/next-token", json={"text": ["你好" * 25] * 4}), 413, "text")
    assert "204 tokens" in err["message"] and "RNNLM_MAX_REQUEST_TOKENS" in err["message"]
    # at the limit: 4 × (48 + 2) = 200 tokens is served
    ok = client.post("/score", json={"candidates": ["今天天气很好" * 8] * 4})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 4


def test_next_token_answer_size_is_bounded_by_texts_times_top_k(client: TestClient) -> None:
    err = error_of(client.post("/next-token", json={"text": ["你"] * 3, "top_k": 14}), 413, "top_k")
    assert "3 texts × top_k 14 = 42" in err["message"] and "40" in err["message"]
    assert "RNNLM_MAX_NEXT_TOKEN_ENTRIES" in err["message"]
    ok = client.post("/next-token", json={"text": ["你"] * 2, "top_k": 20})
    assert ok.status_code == 200 and [len(r["next"]) for r in ok.json()["results"]] == [20, 20]
    single = client.post("/next-token", json={"text": "你", "top_k": 3}).json()
    assert set(single) == {"model", "tokens", "oov", "next", "entropy"} and len(single["next"]) == 3


def test_a_huge_number_is_not_echoed_in_full(client: TestClient) -> None:
    digits = "9" * 4000
    response = client.post(
        "/next-token",
        content=f'{{"text": "你", "top_k": {digits}}}',
        headers={"content-type": "application/json"},
    )
    err = error_of(response, 413, "top_k")
    assert "a number of 4000 characters" in err["message"]
    assert digits[:100] not in response.text and len(response.text) < 1000


def test_the_next_token_answer_is_built_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.routes import next_token as route

    threads: list[tuple[str, bool]] = []
    original = route.render

    def recording(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        threads.append((threading.current_thread().name, on_loop))
        return original(*args, **kwargs)

    monkeypatch.setattr(route, "render", recording)
    assert client.post("/next-token", json={"text": ["你", "好"], "top_k": 5}).status_code == 200
    assert len(threads) == 1 and threads[0][1] is False  # a worker thread, no event loop running there


def test_cost_settings_are_checked_against_each_other_at_startup(tiny_model_dir) -> None:
    dirs = [str(tiny_model_dir)]
    with pytest.raises(ValidationError, match="RNNLM_MAX_TOKENS_IN_FLIGHT"):
        Settings(model_dirs=dirs, max_request_tokens=500, max_tokens_in_flight=400)
    with pytest.raises(ValidationError, match="RNNLM_MAX_TEXT_CHARS"):
        Settings(model_dirs=dirs, max_text_chars=1000, max_request_tokens=900)
    with pytest.raises(ValidationError, match="RNNLM_MAX_TOP_K"):
        Settings(model_dirs=dirs, max_top_k=100, max_next_token_entries=99)
    engine = Settings(
        model_dirs=dirs, max_text_chars=100, max_request_tokens=500, max_tokens_in_flight=500
    ).engine_config()
    assert (engine.max_request_tokens, engine.max_tokens_in_flight) == (500, 500)


class HeldCells:
    """The served model's own cell step, counted; the first pass past ``pause_at`` positions is held
    until :meth:`resume`, so the test can act while the engine is busy with it."""

    def __init__(self, lm: RNNLanguageModel, pause_at: int) -> None:
        self.inner = lm.net.cell_step
        self.positions = 0
        self.pause_at = pause_at
        self.paused = threading.Event()
        self._resume = threading.Event()
        self.at_resume: int | None = None
        lm.net.cell_step = self  # type: ignore[method-assign]

    def __call__(self, layer, gi, h, c):
        out = self.inner(layer, gi, h, c)
        self.positions += gi.size(0)
        if self.positions >= self.pause_at and self.at_resume is None:
            self.paused.set()
            assert self._resume.wait(30), "the test never resumed the worker"
            self.at_resume = self.positions
        return out

    def resume(self) -> None:
        self._resume.set()


CHUNK = 64


def test_tokens_in_flight_503_and_a_gone_clients_work_stops_within_one_chunk(tiny_model_dir) -> None:
    settings = Settings(
        model_dirs=[str(tiny_model_dir)],
        max_text_chars=2000,
        max_request_tokens=10_000,
        max_tokens_in_flight=12_000,
        engine_chunk_positions=CHUNK,
        batch_wait_ms=0,
    )
    app = create_app(settings)
    big = {"candidates": [str(i) + "今天天气很好，我们去公园散步吧。" * 120 for i in range(4)]}
    chars = len(big["candidates"][0])  # 1921, all distinct from the first character on
    with server_thread(app) as base:
        runner = app.state.registry.runners["tiny-lstm"]
        cells = HeldCells(runner.lm, pause_at=8)
        outcome: list[object] = []

        def impatient_client() -> None:  # gives up after 3 s, as a client-side timeout does
            try:
                outcome.append(httpx.post(f"{base}/score", json=big, timeout=3).status_code)
            except httpx.TimeoutException as e:
                outcome.append(e)

        gone = threading.Thread(target=impatient_client)
        gone.start()
        assert cells.paused.wait(30), "the big request never started"
        assert runner.engine.tokens_in_flight == 4 * (chars + 2)  # with <bos> and <eos>
        refused = httpx.post(f"{base}/score", json={"candidates": ["你好" * 1000] * 3}, timeout=10)
        err = error_of(refused, 503, None)
        assert "RNNLM_MAX_TOKENS_IN_FLIGHT" in err["message"] and "12000" in err["message"]
        assert int(refused.headers["retry-after"]) >= 1
        gone.join(30)
        assert isinstance(outcome[0], httpx.TimeoutException)
        deadline = time.monotonic() + 10
        while runner.engine.stats.cancelled < 1:  # the disconnect reached the engine's request
            assert time.monotonic() < deadline, "the gone client's request was never cancelled"
            time.sleep(0.01)
        cells.resume()
        start = time.monotonic()
        small = httpx.post(f"{base}/score", json={"candidates": ["你"]}, timeout=30)
        waited = time.monotonic() - start
        assert small.status_code == 200
        assert cells.at_resume is not None
        whole = 2 * 4 * (chars + 1)  # positions of the full pass: 2 layers × 4 candidates × fed tokens
        after = cells.positions - cells.at_resume - 2 * 2  # less the small request's 2 positions × 2 layers
        assert after <= CHUNK + 4 < whole // 10  # the rest of one chunk, not the rest of the pass
        assert runner.engine.stats.passes_stopped == 1 and runner.engine.tokens_in_flight == 0
        assert waited < 10
