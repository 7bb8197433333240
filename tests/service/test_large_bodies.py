"""Large bodies off the event loop, costly ones refused before their text is tokenized (issue 13):
a /score body from LARGE_BODY_BYTES on is parsed and validated in the body worker while the loop
keeps answering /health; its errors have the same shape as a small body's; a body costing more
tokens than allowed gets its 413 without being tokenized."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import deps
from service.app import create_app
from service.settings import Settings

MAX_TEXT = 2_000
LIMIT_TOKENS = 100_000


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    settings = Settings(
        model_dirs=[str(tiny_model_dir)],
        max_text_chars=MAX_TEXT,
        max_request_tokens=LIMIT_TOKENS,
        max_tokens_in_flight=4 * LIMIT_TOKENS,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def large_body(candidates: int = 40, chars: int = MAX_TEXT) -> dict[str, Any]:
    """A valid /score body over LARGE_BODY_BYTES: ``candidates`` texts of ``chars`` characters."""
    body = {"candidates": [f"{i} " + "今天天气很好" * (chars // 6 - 1) for i in range(candidates)]}
    assert len(json.dumps(body, ensure_ascii=False).encode()) >= deps.LARGE_BODY_BYTES
    return body


def post(client: TestClient, body: Any, raw: bytes | None = None) -> Any:
    content = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
    return client.post("/score", content=content, headers={"content-type": "application/json"})


@pytest.fixture
def parsed_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads :func:`service.deps.parse_body` ran in."""
    threads: list[str] = []
    original = deps.parse_body

    def recording(raw: bytes, model: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(raw, model)

    monkeypatch.setattr(deps, "parse_body", recording)
    return threads


def test_a_large_body_is_parsed_in_the_body_worker_and_a_small_one_on_the_loop(client, parsed_in) -> None:
    response = post(client, large_body(candidates=12))
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 12
    assert len(parsed_in) == 1 and parsed_in[0].startswith("rnnlm-body")
    small = post(client, {"candidates": ["今天", "天气"]})
    assert small.status_code == 200 and len(parsed_in) == 1  # FastAPI's own parse, no hop


def test_health_answers_while_a_large_body_is_being_validated(client, monkeypatch) -> None:
    started, release = threading.Event(), threading.Event()
    original = deps.parse_body

    def slow(raw: bytes, model: Any) -> Any:
        started.set()
        release.wait(30)  # a body that takes long to validate
        return original(raw, model)

    monkeypatch.setattr(deps, "parse_body", slow)
    outcome: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: outcome.update(r=post(client, large_body(candidates=12))))
    sender.start()
    try:
        assert started.wait(30), "the large body never reached the body worker"
        t0 = time.monotonic()
        health = client.get("/health")
        waited = time.monotonic() - t0
        assert health.status_code == 200
        assert waited < 5.0, f"/health waited {waited:.1f} s behind a body being validated"
        assert sender.is_alive()  # the large request is still being validated meanwhile
    finally:
        release.set()
        sender.join(60)
    assert outcome["r"].status_code == 200, outcome["r"].text


def _error(response: Any, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_errors_found_in_the_body_worker_have_the_shape_of_the_loops(client, parsed_in) -> None:
    small, large = {"candidates": ["今天", 5]}, large_body(candidates=12)
    large["candidates"][7] = 5
    a, b = _error(post(client, small), 422), _error(post(client, large), 422)
    assert a["field"] == "candidates.1" and b["field"] == "candidates.7"
    assert (a["type"], a["message"].replace(".1", ".7")) == (b["type"], b["message"])
    unknown = {**large_body(candidates=12), "candidatez": []}  # a misspelt field
    c = _error(post(client, unknown), 422)
    assert c["field"] == "candidatez"
    raw = json.dumps(large_body(candidates=12), ensure_ascii=False).encode()[:-1]  # cut short
    d = _error(post(client, None, raw=raw), 422)
    e = _error(post(client, None, raw=b'{"candidates": ["a"]'), 422)
    assert (d["type"], d["field"]) == (e["type"], e["field"]) and "JSON" in d["message"]
    assert len(parsed_in) == 3  # the three large ones failed in the worker, not on the loop
    nested = _error(post(client, None, raw=b"[" * 100_000 + b"]" * 100_000), 422)
    assert nested["field"] == "body" and "nested too deeply" in nested["message"]
    not_utf8 = _error(post(client, None, raw=b'{"candidates": ["' + b"\xff" * 70_000 + b'"]}'), 422)
    assert not_utf8["field"] == "body" and "UTF-8" in not_utf8["message"]
    assert len(parsed_in) == 5


def test_a_body_past_the_token_limit_gets_413_before_its_text_is_tokenized(client, monkeypatch) -> None:
    from model.inference.engine import text

    tokenized: list[int] = []
    original = text.prepare_candidates

    def recording(tokenizer, candidates, *args, **kwargs):
        tokenized.append(len(candidates))
        return original(tokenizer, candidates, *args, **kwargs)

    monkeypatch.setattr(text, "prepare_candidates", recording)
    body = large_body(candidates=60)
    cost = sum(len(c) + 2 for c in body["candidates"])  # one token per character, <bos>, <eos>
    assert cost > LIMIT_TOKENS
    err = _error(post(client, body), 413)
    assert err["field"] == "candidates" and "RNNLM_MAX_REQUEST_TOKENS" in err["message"]
    assert f"{cost} tokens" in err["message"] and str(LIMIT_TOKENS) in err["message"]
    assert tokenized == []
    assert post(client, {"candidates": ["今天", "天气"]}).status_code == 200 and tokenized == [2]


def test_a_body_that_does_not_fit_the_tokens_in_flight_gets_503_before_it_is_tokenized(
    client, monkeypatch
) -> None:
    from model.inference.engine import text

    tokenized: list[int] = []
    monkeypatch.setattr(text, "prepare_candidates", lambda *a, **k: tokenized.append(1))
    engine = client.app.state.registry.get(None).engine
    body = large_body(candidates=12)
    engine.admission.tokens_in_flight = 4 * LIMIT_TOKENS - 100  # as if other requests were running
    try:
        response = post(client, body)
    finally:
        engine.admission.tokens_in_flight = 0
    err = _error(response, 503)
    assert err["type"] == "overloaded" and "RNNLM_MAX_TOKENS_IN_FLIGHT" in err["message"]
    assert response.headers["retry-after"] and tokenized == []
