"""Reliability and security of the service, in process: request ids, API keys, CORS, structured logs
that keep request text out, admission control (503 + Retry-After), deadlines, client disconnects,
the shutdown drain, the engine's errors, and starting without a loadable model.

The guard and admission are tested twice: as plain ASGI/objects (deterministic, no model), and
through a real uvicorn server in a thread with a model that never stops generating, so streams
last exactly as long as a test wants.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from model.inference.engine import DeadlineExceeded, EngineStopped, Overloaded
from model.models.checkpoint import WEIGHTS
from service.admission import Admission
from service.app import create_app
from service.errors import ApiError
from service.guard import Drain, RequestGuardMiddleware
from service.logs import JsonFormatter, RequestIdFilter
from service.metrics import ServiceMetrics
from service.settings import Settings

from .reliability_support import metric, parse_sse, save_endless_model, server_thread

ERROR_KEYS = {"type", "message", "field", "status", "request_id"}


def error_of(
    response: httpx.Response, status: int, type_: str | None = None, field: str | None = None
) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    err = body["error"]
    assert err["status"] == status and (type_ is None or err["type"] == type_)
    assert field is None or (err["field"] == field and f"`{field}`" in err["message"])
    assert err["request_id"] == response.headers["x-request-id"]
    return err


@pytest.fixture(scope="module")
def endless_dir(tmp_path_factory) -> str:
    return str(save_endless_model(tmp_path_factory.mktemp("models") / "endless"))


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], sse_ping_s=0))) as c:
        yield c


# -- request ids ---------------------------------------------------------------------------------------
def test_every_response_has_a_request_id_and_errors_repeat_it(client):
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    assert (
        client.get("/health", headers={"X-Request-ID": "trace-42:a.b_c"}).headers["x-request-id"]
        == "trace-42:a.b_c"
    )
    for hostile in ("has space", "x" * 129, "semi;colon", "nl\\nx"):
        rid = client.get("/health", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert rid != hostile and len(rid) == 32
    r = client.post("/score", json={"candidates": []}, headers={"X-Request-ID": "client-7"})
    assert error_of(r, 422, "invalid_request", "candidates")["request_id"] == "client-7"


def test_a_500_carries_its_request_id_in_the_body_and_the_header(tiny_model_dir, monkeypatch):
    app = create_app(Settings(model_dirs=[str(tiny_model_dir)]))
    with TestClient(app, raise_server_exceptions=False) as c:

        async def boom(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.registry.get(None), "score", boom)
        r = c.post("/score", json={"candidates": ["a"]}, headers={"X-Request-ID": "bug-report-1"})
        assert error_of(r, 500, "internal_error")["request_id"] == "bug-report-1"
        assert "bug-report-1" in r.json()["error"]["message"]
        made = c.post("/score", json={"candidates": ["a"]}).headers["x-request-id"]
        assert len(made) == 32


# -- settings the engine would refuse per request are refused at startup ---------------------------------
def test_settings_past_the_engine_are_refused_with_one_line_naming_them(tiny_model_dir, monkeypatch, capsys):
    from service.__main__ import serve

    with pytest.raises(ValueError, match=r"RNNLM_MAX_N .* RNNLM_MAX_GENERATION_ROWS"):
        Settings(model_dirs=[str(tiny_model_dir)], max_n=129, max_generation_rows=128)
    Settings(model_dirs=[str(tiny_model_dir)], max_n=128, max_generation_rows=128)
    monkeypatch.setenv("RNNLM_MAX_N", "200")
    assert serve(model_dirs=[str(tiny_model_dir)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "error: invalid settings: RNNLM_MAX_N (200) is more than RNNLM_MAX_GENERATION_ROWS"
    )


# -- API keys ------------------------------------------------------------------------------------------
def test_api_keys_guard_every_route_but_health_docs_and_the_page(tiny_model_dir, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<title>playground</title>", encoding="utf-8")
    settings = Settings(model_dirs=[str(tiny_model_dir)], api_key="k-one", api_keys=["k-two", "k-three"])
    with TestClient(create_app(settings, static_dir=static)) as c:
        for path in ("/health", "/ready", "/", "/docs", "/openapi.json"):  # the probes: test_public_probes.py
            assert c.get(path).status_code == 200, path
        for method, path in [
            ("GET", "/models"),
            ("GET", "/metrics"),
            ("POST", "/score"),
            ("POST", "/next-token"),
            ("POST", "/generate"),
        ]:
            r = c.request(method, path, json={"candidates": ["a"]})
            assert error_of(r, 401, "unauthorized", "Authorization")["message"].startswith(
                "`Authorization`: missing"
            )
            assert r.headers["www-authenticate"].startswith("Bearer")
        for bad in ("Bearer nope", "Basic k-one", "Bearer", "k-one", "Bearer k-one2"):
            r = c.post("/score", json={"candidates": ["a"]}, headers={"Authorization": bad})
            error_of(r, 401, "unauthorized")
        for key in ("k-one", "k-two", "k-three"):
            r = c.post("/score", json={"candidates": ["a"]}, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert spec["paths"]["/score"]["post"]["security"] == [{"bearer": []}]
        assert "401" in spec["paths"]["/score"]["post"]["responses"]
        assert "security" not in spec["paths"]["/health"]["get"]
        assert "k-one" not in json.dumps(spec) and "k-one" not in repr(settings)


def test_made_up_methods_and_paths_add_no_metric_series_even_unauthenticated(tiny_model_dir):
    app = create_app(Settings(model_dirs=[str(tiny_model_dir)], api_key="s3cret"))
    key = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as c:

        def series() -> list[str]:
            text = c.get("/metrics", headers=key).text
            return [ln for ln in text.splitlines() if ln.startswith("rnnlm_request")]

        for i in range(3):
            c.request(f"MADEUP{i}", f"/made/up/{i}")
            c.request(f"MADEUP{i}", f"/made/up/{i}", headers=key)
            c.post(f"/nothing/{i}")
        series()  # /metrics's own series appear once it has been answered
        before = len(series())
        for i in range(3, 60):
            assert c.request(f"MADEUP{i}", f"/made/up/{i}").status_code == 401
            c.request(f"MADEUP{i}", f"/made/up/{i}", headers=key)
            c.post(f"/nothing/{i}")
        text = "\n".join(series())
        assert len(series()) == before
        assert "MADEUP" not in text and "/made/up" not in text and "/nothing" not in text
        assert 'rnnlm_requests_total{endpoint="other",method="other",status="401"}' in text


def test_authentication_is_off_without_keys(client):
    assert client.post("/score", json={"candidates": ["a"]}).status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


# -- CORS ----------------------------------------------------------------------------------------------
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_cors_is_closed_by_default(client):
    r = client.post("/score", json={"candidates": ["a"]}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options("/score", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_allows_the_configured_origins_even_with_keys(tiny_model_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], cors_origins=["https://app.example"], api_key="k")
    with TestClient(create_app(settings)) as c:
        pre = c.options("/score", headers={"Origin": "https://app.example", **PREFLIGHT})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        denied = c.post("/score", json={"candidates": ["a"]}, headers={"Origin": "https://app.example"})
        assert denied.status_code == 401  # a browser can read the 401 (and show it)
        assert denied.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options("/score", headers={"Origin": "https://other.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in other.headers


# -- structured logs -----------------------------------------------------------------------------------
@pytest.fixture
def json_log():
    """Every record of the service's loggers, formatted as JSON lines into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    loggers = [logging.getLogger(n) for n in ("rnnlm.access", "rnnlm.service")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield buffer
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


SECRET = "机密文本SECRET-7781"


def test_logs_are_json_with_request_ids_and_never_the_request_text(client, json_log):
    client.post("/score", json={"candidates": [SECRET]}, headers={"X-Request-ID": "log-test-1"})
    client.post("/generate", json={"prompt": SECRET, "max_new_tokens": 2, "top_p": 7})
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    access = [e for e in lines if e["logger"] == "rnnlm.access"]
    assert {"ts", "level", "msg", "request_id", "method", "path", "status", "duration_ms"} <= set(access[0])
    assert access[0]["request_id"] == "log-test-1" and access[0]["path"] == "/score"
    assert [e["status"] for e in access] == [200, 422]
    assert "SECRET" not in json_log.getvalue()


def test_request_text_is_logged_only_when_asked(tiny_model_dir, json_log):
    settings = Settings(model_dirs=[str(tiny_model_dir)], log_request_text=True)
    with TestClient(create_app(settings)) as c:
        c.post("/score", json={"candidates": [SECRET]})
    [entry] = [json.loads(line) for line in json_log.getvalue().splitlines() if '"rnnlm.access"' in line]
    assert SECRET in entry["request_text"]


# -- errors of the batching engine ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raised", "status", "type_", "retry_after"),
    [
        (Overloaded("score", 256, 2.2), 503, "overloaded", "3"),
        (DeadlineExceeded("score did not finish before its deadline"), 504, "timeout", None),
        (EngineStopped("the engine is not running"), 503, "shutting_down", "5"),
    ],
)
def test_engine_errors_map_to_503_and_504(tiny_model_dir, monkeypatch, raised, status, type_, retry_after):
    app = create_app(Settings(model_dirs=[str(tiny_model_dir)]))
    with TestClient(app) as c:

        async def fail(*args, **kwargs):
            raise raised

        monkeypatch.setattr(app.state.registry.get(None), "score", fail)
        r = c.post("/score", json={"candidates": ["a"]})
        error_of(r, status, type_)
        assert r.headers.get("retry-after") == retry_after


# -- admission (as an object) --------------------------------------------------------------------------
def test_admission_bounds_each_model_and_the_streams_and_frees_on_errors():
    adm = Admission(max_in_flight=2, max_streams=1, metrics=ServiceMetrics())
    with adm.slot("a", stream=True), adm.slot("a", stream=False):
        with pytest.raises(ApiError) as full, adm.slot("a", stream=False):
            pass
        assert full.value.status == 503 and full.value.type == "overloaded"
        assert int(full.value.headers["Retry-After"]) >= 1
        with adm.slot("b", stream=False):  # another model has its own slots
            pass
    with adm.slot("b", stream=True):
        with pytest.raises(ApiError) as streams, adm.slot("a", stream=True):
            pass
        assert streams.value.field == "stream"
    with pytest.raises(RuntimeError), adm.slot("a", stream=True):
        raise RuntimeError("the route failed")
    assert adm.in_flight == {"a": 0, "b": 0} and adm.streams == 0


# -- the guard (as plain ASGI) -------------------------------------------------------------------------
class SlowApp:
    """An ASGI app that reads the body, then works for ``seconds`` (or streams events) before answering."""

    def __init__(self, seconds: float, stream: bool = False) -> None:
        self.seconds, self.stream = seconds, stream
        self.cancelled = False

    async def __call__(self, scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        try:
            if self.stream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")],
                    }
                )
                while True:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"event: token\r\ndata: {}\r\n\r\n",
                            "more_body": True,
                        }
                    )
                    await asyncio.sleep(0.01)
            await asyncio.sleep(self.seconds)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def drive(guard, path: str = "/score", disconnect_after: float | None = None) -> list[dict]:
    """Send one request through ``guard``; the client disconnects after ``disconnect_after`` s."""
    sent: list[dict] = []
    body_given = False

    async def receive() -> dict:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        if disconnect_after is not None:
            await asyncio.sleep(disconnect_after)
        else:
            await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await guard(scope, receive, send)
    return sent


def _json_body(sent: list[dict]) -> tuple[int, dict]:
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_guard_ends_a_request_past_its_deadline_with_504():
    app = SlowApp(seconds=30)
    guard = RequestGuardMiddleware(app, Drain(5), timeout_s=0.2, guarded_paths={"/score"})
    start = time.monotonic()
    status, body = _json_body(asyncio.run(drive(guard)))
    assert (
        status == 504
        and body["error"]["type"] == "timeout"
        and "RNNLM_REQUEST_TIMEOUT_S" in body["error"]["message"]
    )
    assert app.cancelled and time.monotonic() - start < 5


def test_guard_ends_a_stream_past_its_deadline_with_a_final_error_event():
    guard = RequestGuardMiddleware(SlowApp(0, stream=True), Drain(5), timeout_s=0.2, guarded_paths={"/score"})
    sent = asyncio.run(drive(guard))
    raw = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    events = parse_sse(raw)
    assert events[0][0] == "token" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "timeout" and sent[-1]["more_body"] is False


def test_guard_cancels_the_work_of_a_client_that_went_away():
    app = SlowApp(seconds=30)
    guard = RequestGuardMiddleware(app, Drain(5), timeout_s=0, guarded_paths={"/score"})
    start = time.monotonic()
    sent = asyncio.run(drive(guard, disconnect_after=0.1))
    assert app.cancelled and time.monotonic() - start < 5
    assert sent[0]["status"] == 499  # for the metrics and the access log; the client is gone


def test_an_app_that_meets_the_disconnect_itself_gives_a_499_not_a_500():
    """A client gone while its body is read: the app's ClientDisconnect is that client gone."""
    from starlette.requests import ClientDisconnect

    async def reads_a_body_that_never_comes(scope, receive, send):
        raise ClientDisconnect()

    guard = RequestGuardMiddleware(
        reads_a_body_that_never_comes, Drain(5), timeout_s=5, guarded_paths={"/score"}
    )
    sent = asyncio.run(drive(guard))
    assert sent[0]["status"] == 499 and len(sent) == 2


def test_guard_leaves_other_paths_and_quick_requests_alone():
    quick = SlowApp(seconds=0)
    guard = RequestGuardMiddleware(quick, Drain(5), timeout_s=0.5, guarded_paths={"/score"})
    assert asyncio.run(drive(guard))[-1]["body"] == b"done"
    slow = SlowApp(seconds=0.5)
    unguarded = RequestGuardMiddleware(slow, Drain(5), timeout_s=0.1, guarded_paths={"/score"})
    assert asyncio.run(drive(unguarded, path="/models"))[-1]["body"] == b"done" and not slow.cancelled


def test_drain_finishes_quick_work_ends_slow_work_and_refuses_new_requests():
    async def scenario():
        drain = Drain(grace_s=0.3)
        drain.bind(asyncio.get_running_loop())
        quick, slow = SlowApp(seconds=0.1), SlowApp(seconds=30)
        quick_guard = RequestGuardMiddleware(quick, drain, timeout_s=0, guarded_paths={"/score"})
        slow_guard = RequestGuardMiddleware(slow, drain, timeout_s=0, guarded_paths={"/score"})
        running = [asyncio.ensure_future(drive(quick_guard)), asyncio.ensure_future(drive(slow_guard))]
        await asyncio.sleep(0.02)
        drain.begin_threadsafe()
        await asyncio.sleep(0.01)
        late = await drive(quick_guard)
        health = await drive(RequestGuardMiddleware(SlowApp(0), drain, 0, {"/score"}), path="/health")
        quick_sent, slow_sent = await asyncio.gather(*running)
        return quick_sent, slow_sent, late, health, slow.cancelled

    quick_sent, slow_sent, late, health, slow_cancelled = asyncio.run(scenario())
    assert quick_sent[-1]["body"] == b"done"  # finished within the grace period
    status, body = _json_body(slow_sent)
    assert status == 503 and body["error"]["type"] == "shutting_down" and slow_cancelled
    status, body = _json_body(late)
    assert status == 503 and body["error"]["type"] == "shutting_down"
    assert health[-1]["body"] == b"done"


# -- through a real server: streams, slots, disconnects ------------------------------------------------
@pytest.fixture(scope="module")
def live(endless_dir):
    """uvicorn in a thread: one slot per model, one stream, 4 s deadline, endless generations."""
    settings = Settings(
        model_dirs=[endless_dir],
        max_in_flight=1,
        max_streams=1,
        request_timeout_s=4,
        max_new_tokens=10**6,
        sse_ping_s=0,
    )
    app = create_app(settings)
    with server_thread(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c


ENDLESS = {"prompt": "今天", "max_new_tokens": 10**6, "stream": True, "seed": 1}


def admitted(c: httpx.Client) -> float:
    return metric(c.get("/metrics").text, 'rnnlm_admitted{model="endless"}')


def wait_until_free(c: httpx.Client, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while admitted(c) != 0:
        assert time.monotonic() - start < timeout_s, "the slot was not freed"
        time.sleep(0.01)
    return time.monotonic() - start


def test_full_model_answers_503_with_retry_after_at_once_and_a_gone_client_frees_its_slot(live):
    with live.stream("POST", "/generate", json=ENDLESS) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("event: token")
        start = time.monotonic()
        refused = live.post("/score", json={"candidates": ["你先走"]})
        assert time.monotonic() - start < 2  # at once, not after the stream
        err = error_of(refused, 503, "overloaded")
        assert "RNNLM_MAX_IN_FLIGHT" in err["message"] and int(refused.headers["retry-after"]) >= 1
        assert admitted(live) == 1
    freed_after = wait_until_free(live)  # leaving the block closed the connection mid-stream
    assert freed_after < 3
    assert live.post("/score", json={"candidates": ["你先走"]}).status_code == 200
    assert metric(live.get("/metrics").text, 'rnnlm_rejected_total{reason="disconnected"}') >= 1


def test_stream_past_the_deadline_ends_with_an_error_event(live):
    wait_until_free(live)
    start = time.monotonic()
    r = live.post("/generate", json=ENDLESS)
    events = parse_sse(r.text)
    assert r.status_code == 200 and 3.5 < time.monotonic() - start < 15
    assert [e for e, _ in events[:-1]] == ["token"] * (len(events) - 1)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout"
    wait_until_free(live)


def test_a_second_stream_past_the_stream_limit_is_refused(endless_dir):
    settings = Settings(
        model_dirs=[endless_dir], max_in_flight=8, max_streams=1, max_new_tokens=10**6, sse_ping_s=0
    )
    with server_thread(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as c:
        with c.stream("POST", "/generate", json=ENDLESS) as first:
            assert first.status_code == 200, first.read()
            # Keep the iterator: one dropped at once closes the response, which is a client leaving
            # (the guard then frees the stream's slot, as it should, and the second stream is admitted).
            lines = first.iter_lines()
            assert next(lines).startswith("event: token")
            assert metric(c.get("/metrics").text, "rnnlm_streams_open") == 1
            r = c.post("/generate", json={**ENDLESS, "max_new_tokens": 3})
            assert "RNNLM_MAX_STREAMS" in error_of(r, 503, "overloaded", "stream")["message"]
            assert c.post("/generate", json={"prompt": "a", "max_new_tokens": 3}).status_code == 200
        spec = c.get("/openapi.json").json()
        stream_doc = spec["components"]["schemas"]["GenerateRequest"]["properties"]["stream"]["description"]
        assert "RNNLM_MAX_STREAMS" in stream_doc
        assert {"503", "504"} <= set(spec["paths"]["/generate"]["post"]["responses"])


def test_a_real_server_refuses_content_length_with_transfer_encoding(tiny_model_dir):
    """Request smuggling: uvicorn (h11) reads such a body as chunked; the app refuses it first."""
    import socket

    with server_thread(create_app(Settings(model_dirs=[str(tiny_model_dir)]))) as base:
        host, port = base.removeprefix("http://").split(":")
        body = b'{"candidates": ["a"]}'
        request = (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert b"x-request-id" in head.lower() and b"Transfer-Encoding" in payload


def test_models_reads_an_odd_metrics_json_without_a_500(tiny_model_dir, tmp_path):
    d = tmp_path / "odd-metrics"
    shutil.copytree(tiny_model_dir, d)
    (d / "metrics.json").write_text(json.dumps({"data": [1], "hardware": 1, "test": [2]}))
    with TestClient(create_app(Settings(model_dirs=[str(d)]))) as c:
        r = c.get("/models")
        assert r.status_code == 200, r.text
        [info] = r.json()["models"]
        assert info["metrics"] == {} and "device" not in info["training"]


# -- starting without a loadable model -----------------------------------------------------------------
def test_start_on_load_error_serves_health_and_says_why_it_is_not_ready(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / WEIGHTS).write_bytes((broken / WEIGHTS).read_bytes()[:64])
    settings = Settings(model_dirs=[str(broken)], start_on_load_error=True)
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        err = error_of(r, 503, "not_ready")
        assert "sha256" in err["message"] and "broken-model" in err["message"]
        assert str(tmp_path) not in r.text  # server paths are not shown to clients
        assert (
            error_of(c.post("/score", json={"candidates": ["a"]}), 503, "not_ready")["message"]
            == err["message"]
        )
    with (
        pytest.raises(Exception, match="sha256"),
        TestClient(create_app(settings.model_copy(update={"start_on_load_error": False}))),
    ):
        pass
