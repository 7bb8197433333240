"""The HTTP service through ``TestClient`` (lifespan included) on tiny seeded models: every endpoint,
every documented error, determinism, stop strings and well-formed server-sent events."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.inference.scoring import ScoreOptions, score_candidates
from model.models.checkpoint import save_rnn
from model.models.loading import load_model
from model.text.tokenizer import BOS_ID, EOS_ID
from rnnlm.bench.common import parse_events, sse_blocks
from service.app import create_app
from service.runner import ModelRegistry, resolve_device
from service.settings import Settings, get_settings

from ..conftest import build_tiny_model

LIMITS = dict(
    max_body_bytes=4000,
    max_text_chars=60,
    max_candidates=6,
    max_batch_texts=4,
    max_top_k=20,
    max_new_tokens=30,
    max_n=3,
    max_stop_strings=2,
    sse_ping_s=0,
)
ERROR_KEYS = {"type", "message", "field", "status", "request_id"}


@pytest.fixture(scope="module")
def gru_model_dir(tmp_path_factory):
    net, tok = build_tiny_model(cell="gru", seed=1)
    return save_rnn(tmp_path_factory.mktemp("models") / "tiny-gru", net, tok, {"note": "second model"})


@pytest.fixture(scope="module")
def settings(tiny_model_dir, gru_model_dir) -> Settings:
    return Settings(model_dirs=[str(tiny_model_dir), str(gru_model_dir)], device="auto", **LIMITS)


@pytest.fixture(scope="module")
def client(settings, tmp_path_factory):
    static = tmp_path_factory.mktemp("static")
    (static / "index.html").write_text("<!doctype html><title>rnnlm playground</title>", encoding="utf-8")
    (static / "app.js").write_text("console.log('hi')", encoding="utf-8")
    with TestClient(create_app(settings, static_dir=static)) as c:
        yield c


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


def error_of(response, status: int, field: str | None = None, type_: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    err = body["error"]
    assert err["status"] == status
    if field is not None:
        assert err["field"] == field
        assert f"`{field}`" in err["message"]
    if type_ is not None:
        assert err["type"] == type_
    assert "Traceback" not in err["message"]
    return err


def sse_events(raw: str) -> list[tuple[str, dict]]:
    """Parse a text/event-stream body into (event, data) pairs, checking the framing."""
    assert all(set(block) == {"event", "data"} for block in sse_blocks(raw)), raw[:500]
    return parse_events(raw)


# -- ops endpoints -----------------------------------------------------------------------------------
def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": ["tiny-lstm", "tiny-gru"]}


def test_not_ready_before_the_lifespan_has_loaded(settings):
    app = create_app(settings)
    c = TestClient(app)  # no `with`: the lifespan never runs, nothing is loaded
    assert c.get("/health").status_code == 200
    r = c.get("/ready")
    error_of(r, 503, type_="not_ready")
    assert r.headers["retry-after"]
    error_of(c.post("/score", json={"candidates": ["a"]}), 503, type_="not_ready")


def test_models_lists_every_model_with_its_figures(client, lm):
    models = client.get("/models").json()["models"]
    assert [m["name"] for m in models] == ["tiny-lstm", "tiny-gru"]
    first = models[0]
    assert first["default"] is True and models[1]["default"] is False
    assert first["kind"] == "rnn" and first["tokenizer"] == "char"
    assert first["vocab_size"] == lm.vocab_size
    assert first["parameters"] == lm.net.num_parameters()
    assert first["device"] == "cpu"
    assert first["architecture"]["cell"] == "lstm" and models[1]["architecture"]["cell"] == "gru"
    assert first["metrics"] == {"test": {"perplexity": 1.0}}  # from the fixture's metrics.json


def test_metrics_count_requests_tokens_and_latency(client):
    client.post("/score", json={"candidates": ["你先走", "你走先"]})
    client.post("/generate", json={"prompt": "你", "max_new_tokens": 4, "seed": 3})
    client.post("/score", json={"candidates": []})
    text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['rnnlm_requests_total{endpoint="/score",method="POST",status="200"}'] >= 1
    assert samples['rnnlm_requests_total{endpoint="/score",method="POST",status="422"}'] >= 1
    assert samples['rnnlm_request_duration_seconds_count{endpoint="/score"}'] >= 2
    assert samples['rnnlm_tokens_scored_total{model="tiny-lstm"}'] >= 8  # 4 + 4 tokens, <eos> included
    assert samples['rnnlm_tokens_generated_total{model="tiny-lstm"}'] >= 1
    assert samples['rnnlm_requests_in_flight{endpoint="/metrics"}'] == 1  # this very request
    client.get("/no/such/path/123")
    assert 'endpoint="other"' in client.get("/metrics").text  # raw URLs never become labels


# -- /next-token -------------------------------------------------------------------------------------
def test_next_token_single_and_batch(client, lm):
    r = client.post("/next-token", json={"text": "厨房", "top_k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny-lstm" and body["tokens"] == ["厨", "房"]
    full = lm.next_token_logprobs([[BOS_ID, *lm.tokenizer.encode("厨房").ids]])[0]
    assert [t["id"] for t in body["next"]] == full.topk(5).indices.tolist()
    assert [t["logprob"] for t in body["next"]] == pytest.approx(full.topk(5).values.tolist(), abs=1e-5)
    assert all(t["prob"] == pytest.approx(math.exp(t["logprob"])) for t in body["next"])
    assert body["entropy"] > 0
    batch = client.post("/next-token", json={"text": ["厨房", ""], "top_k": 5}).json()
    assert [t["id"] for t in batch["results"][0]["next"]] == [t["id"] for t in body["next"]]
    assert batch["results"][1]["tokens"] == []


@pytest.mark.parametrize("text", ["", "   ", "😀", "厨房 kitchen 🍳 Ωμέγα", "\u200b\ufeff", "a" * 60])
def test_next_token_any_text(client, text):
    body = client.post("/next-token", json={"text": text, "top_k": 3}).json()
    assert len(body["next"]) == 3 and body["tokens"] == list(text)
    assert all(0 < t["prob"] <= 1 for t in body["next"])


# -- /score ------------------------------------------------------------------------------------------
def test_score_equals_the_model_library(client, lm):
    cands = ["厨房里食油用完了", "厨房里石油用完了", "", "😀 mixed 文字"]
    body = client.post("/score", json={"candidates": cands, "per_token": True}).json()
    seqs = [[BOS_ID, *lm.tokenizer.encode(c).ids, EOS_ID] for c in cands]
    direct = lm.sequence_logprobs(seqs)
    for cand, result, lps in zip(cands, body["results"], direct, strict=True):
        assert result["text"] == cand
        assert result["logprob"] == pytest.approx(float(lps.sum()), abs=1e-6)
        assert [t["logprob"] for t in result["token_logprobs"]] == pytest.approx(lps.tolist(), abs=1e-6)
        assert [t["token"] for t in result["token_logprobs"]] == [*cand, "<eos>"]
        assert result["num_tokens"] == len(cand) + 1
        assert result["perplexity"] == pytest.approx(math.exp(-float(lps.sum()) / len(lps)))
    assert body["results"][3]["oov"] > 0
    scores = [r["score"] for r in body["results"]]
    assert body["ranking"] == sorted(range(4), key=lambda i: -scores[i])
    assert sorted(r["rank"] for r in body["results"]) == [1, 2, 3, 4]


def test_score_options_pass_through_to_the_library(client, lm):
    request = {
        "candidates": ["你先走", "你走先", "我们先走了"],
        "context": "他说",
        "bos": False,
        "eos": False,
        "external_scores": [0.5, -1.0, 2.0],
        "lm_weight": 0.7,
        "length_bonus": 0.3,
        "normalize": "token",
    }
    body = client.post("/score", json=request).json()
    options = ScoreOptions(
        context="他说", bos=False, eos=False, lm_weight=0.7, length_bonus=0.3, normalize="token"
    )
    expected = score_candidates(lm, request["candidates"], options, request["external_scores"])
    assert body["ranking"] == expected.ranking
    for got, want in zip(body["results"], expected.results, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)  # batched engine vs the library alone
        assert got["num_tokens"] == want.num_tokens == len(got["text"])  # no <eos>, context unscored
        assert got["token_logprobs"] is None


def test_external_scores_rerank(client):
    cands = ["厨房里食油用完了", "厨房里石油用完了"]
    plain = client.post("/score", json={"candidates": cands}).json()
    loser = plain["ranking"][-1]
    boosted = client.post(
        "/score",
        json={"candidates": cands, "external_scores": [50.0 if i == loser else 0.0 for i in range(2)]},
    )
    assert boosted.json()["ranking"][0] == loser


def test_score_ties_keep_input_order(client):
    body = client.post("/score", json={"candidates": ["b", "a", "b", "a"], "lm_weight": 0}).json()
    assert body["ranking"] == [0, 1, 2, 3] and [r["rank"] for r in body["results"]] == [1, 2, 3, 4]


def test_model_field_selects_the_model(client, gru_model_dir):
    cands = ["你先走"]
    default = client.post("/score", json={"candidates": cands}).json()
    gru = client.post("/score", json={"candidates": cands, "model": "tiny-gru"}).json()
    assert default["model"] == "tiny-lstm" and gru["model"] == "tiny-gru"
    gru_lm = load_model(gru_model_dir)
    ids = [BOS_ID, *gru_lm.tokenizer.encode(cands[0]).ids, EOS_ID]
    direct = float(gru_lm.sequence_logprobs([ids])[0].sum())
    assert gru["results"][0]["logprob"] == pytest.approx(direct, abs=1e-6)
    assert gru["results"][0]["logprob"] != pytest.approx(default["results"][0]["logprob"])


# -- /generate ---------------------------------------------------------------------------------------
def generate(client, **body) -> dict:
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_seeded_generation_is_deterministic(client):
    a = generate(client, prompt="今天", max_new_tokens=20, seed=42, temperature=1.0, return_logprobs=True)
    b = generate(client, prompt="今天", max_new_tokens=20, seed=42, temperature=1.0, return_logprobs=True)
    assert a == b and a["seed"] == 42
    others = {generate(client, prompt="今天", max_new_tokens=20, seed=s)["text"] for s in range(43, 48)}
    assert len(others | {a["text"]}) > 1  # the seed matters
    drawn = generate(client, prompt="今天", max_new_tokens=20)
    assert drawn == generate(client, prompt="今天", max_new_tokens=20, seed=drawn["seed"])


def test_greedy_generation_follows_the_argmax(client, lm):
    body = generate(client, prompt="人民", max_new_tokens=6, temperature=0, return_logprobs=True)
    ids = [BOS_ID, *lm.tokenizer.encode("人民").ids]
    for step in body["logprobs"]:
        logprobs = lm.next_token_logprobs([ids])[0]
        logprobs[:3] = float("-inf")  # <pad> <unk> <bos> are never generated
        best = int(logprobs.argmax())
        assert step["token"] == lm.tokenizer.piece(best)
        assert step["logprob"] == pytest.approx(float(lm.next_token_logprobs([ids])[0][best]), abs=1e-5)
        ids.append(best)
    assert body["num_tokens"] == len(body["logprobs"])
    assert body["finish_reason"] in ("length", "eos")
    assert body["prompt_tokens"] == 2


def test_stop_strings_are_honored(client):
    free = generate(client, prompt="", max_new_tokens=30, seed=7, temperature=0.8)
    text = free["text"]
    assert len(text) >= 4, text
    stop = text[2:4]
    stopped = generate(client, prompt="", max_new_tokens=30, seed=7, temperature=0.8, stop=["zzz", stop])
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == text[: text.find(stop)]
    single = generate(client, prompt="", max_new_tokens=30, seed=7, temperature=0.8, stop=stop)  # bare string
    assert single["text"] == stopped["text"]


def test_n_samples_each_reproducible_alone(client):
    body = generate(client, prompt="新", max_new_tokens=10, seed=100, n=3, return_logprobs=True)
    assert [s["index"] for s in body["samples"]] == [0, 1, 2]
    assert [s["seed"] for s in body["samples"]] == [100, 101, 102]
    assert body["text"] == body["samples"][0]["text"]
    for s in body["samples"]:
        alone = generate(client, prompt="新", max_new_tokens=10, seed=s["seed"], return_logprobs=True)
        one = alone["samples"][0]
        assert {**one, "logprobs": None} == {**s, "index": 0, "logprobs": None}
        assert [t["token"] for t in one["logprobs"]] == [t["token"] for t in s["logprobs"]]
        # batch of 3 vs 1: the same tokens, log-probs equal up to float32 rounding
        assert [t["logprob"] for t in one["logprobs"]] == pytest.approx(
            [t["logprob"] for t in s["logprobs"]], abs=1e-5
        )
        assert len(s["logprobs"]) == s["num_tokens"] <= 10
        assert all(lp["logprob"] <= 0 for lp in s["logprobs"])


def test_generate_any_prompt(client):
    for prompt in ["", " ", "😀", "mixed 文字 ✓"]:
        body = generate(client, prompt=prompt, max_new_tokens=3, seed=1)
        assert body["finish_reason"] in ("length", "eos", "stop") and body["num_tokens"] <= 3


# -- streaming ---------------------------------------------------------------------------------------
def stream(client, **body) -> tuple[list[tuple[str, dict]], str]:
    with client.stream("POST", "/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    return sse_events(raw), raw


@pytest.mark.parametrize("stop", [[], None])
def test_stream_events_are_well_formed_and_match_the_plain_response(client, stop):
    request = dict(prompt="今天", max_new_tokens=15, seed=11, n=2, return_logprobs=True)
    plain = generate(client, **request)
    if stop is None:  # a stop string the samples really contain, to exercise the hold-back
        text = plain["samples"][0]["text"]
        stop = [text[1:3]] if len(text) >= 3 else []
    plain = generate(client, **request, stop=stop)
    events, _ = stream(client, **request, stop=stop)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and set(kinds[:-1]) == {"token"}
    done = events[-1][1]
    assert done == plain  # the final event carries the whole non-streamed body
    for sample in range(2):
        tokens = [d for e, d in events if e == "token" and d["sample"] == sample]
        assert [d["index"] for d in tokens] == list(range(len(tokens)))
        assert [d["finish_reason"] for d in tokens[:-1]] == [None] * (len(tokens) - 1)
        assert tokens[-1]["finish_reason"] == plain["samples"][sample]["finish_reason"]
        assert "".join(d["text"] for d in tokens) == plain["samples"][sample]["text"]
        assert [{"token": d["token"], "logprob": d["logprob"]} for d in tokens] == plain["samples"][sample][
            "logprobs"
        ]


def test_stream_errors_before_start_are_plain_json(client):
    r = client.post("/generate", json={"prompt": "a", "stream": True, "n": 0})
    error_of(r, 422, "n", "invalid_request")


# -- errors ------------------------------------------------------------------------------------------
# (path, body, status, field, type)
ERROR_CASES = [
    ("/score", {}, 422, "candidates", "invalid_request"),
    ("/score", {"candidates": []}, 422, "candidates", "invalid_request"),
    ("/score", {"candidates": "abc"}, 422, "candidates", "invalid_request"),
    ("/score", {"candidates": [1, 2]}, 422, "candidates.0", "invalid_request"),
    ("/score", {"candidates": ["a"], "normalize": "mean"}, 422, "normalize", "invalid_request"),
    ("/score", {"candidates": ["a"], "external_scores": [1, 2]}, 422, "external_scores", "invalid_request"),
    ("/score", {"candidates": ["a"], "lm_weight": 1e9}, 422, "lm_weight", "invalid_request"),
    ("/score", {"candidates": ["a"], "bos": "maybe"}, 422, "bos", "invalid_request"),
    ("/score", {"candidates": ["a"], "candidate": ["typo"]}, 422, "candidate", "invalid_request"),
    ("/score", {"candidates": ["a"], "model": "nope"}, 404, "model", "model_not_found"),
    ("/score", {"candidates": ["a"], "model": ""}, 422, "model", "invalid_request"),
    ("/score", {"candidates": ["a"] * 7}, 413, "candidates", "payload_too_large"),
    ("/score", {"candidates": ["a", "b" * 61]}, 413, "candidates.1", "payload_too_large"),
    ("/score", {"candidates": ["a"], "context": "c" * 61}, 413, "context", "payload_too_large"),
    ("/next-token", {}, 422, "text", "invalid_request"),
    ("/next-token", {"text": []}, 422, "text", "invalid_request"),
    ("/next-token", {"text": None}, 422, "text", "invalid_request"),
    ("/next-token", {"text": "a", "top_k": 0}, 422, "top_k", "invalid_request"),
    ("/next-token", {"text": "a", "top_k": 21}, 413, "top_k", "payload_too_large"),
    ("/next-token", {"text": ["a"] * 5}, 413, "text", "payload_too_large"),
    ("/next-token", {"text": "a" * 61}, 413, "text", "payload_too_large"),
    ("/next-token", {"text": "a", "model": "nope"}, 404, "model", "model_not_found"),
    ("/generate", {"max_new_tokens": 0}, 422, "max_new_tokens", "invalid_request"),
    ("/generate", {"max_new_tokens": 31}, 413, "max_new_tokens", "payload_too_large"),
    ("/generate", {"max_new_tokens": 10**12}, 413, "max_new_tokens", "payload_too_large"),
    ("/generate", {"n": 4}, 413, "n", "payload_too_large"),
    ("/generate", {"top_k": 21}, 413, "top_k", "payload_too_large"),
    ("/generate", {"stop": ["a", "b", "c"]}, 413, "stop", "payload_too_large"),
    ("/generate", {"stop": [""]}, 422, "stop.0", "invalid_request"),
    ("/generate", {"temperature": -0.1}, 422, "temperature", "invalid_request"),
    ("/generate", {"top_p": 0}, 422, "top_p", "invalid_request"),
    ("/generate", {"top_p": 1.5}, 422, "top_p", "invalid_request"),
    ("/generate", {"repetition_penalty": 0}, 422, "repetition_penalty", "invalid_request"),
    ("/generate", {"seed": -1}, 422, "seed", "invalid_request"),
    ("/generate", {"stream": "yes please"}, 422, "stream", "invalid_request"),
    ("/generate", {"prompt": "p" * 61}, 413, "prompt", "payload_too_large"),
    ("/generate", {"model": "nope"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize(("path", "body", "status", "field", "type_"), ERROR_CASES)
def test_documented_errors(client, path, body, status, field, type_):
    error_of(client.post(path, json=body), status, field, type_)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "body"),
        (b'{"candidates": ["a"], "lm_weight": NaN}', "lm_weight"),
        (b'{"candidates": ["a"], "external_scores": [Infinity]}', "external_scores.0"),
        (b"[1, 2]", "body"),
        (b"", "body"),
    ],
)
def test_malformed_bodies(client, raw, field):
    r = client.post("/score", content=raw, headers={"content-type": "application/json"})
    error_of(r, 422, field, "invalid_request")


def test_body_size_limit(client):
    big = json.dumps({"candidates": ["a"], "context": "x" * 5000}).encode()
    error_of(
        client.post("/score", content=big, headers={"content-type": "application/json"}),
        413,
        "body",
        "payload_too_large",
    )

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"candidates": ["a"], "context": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    error_of(
        client.post("/score", content=chunks(), headers={"content-type": "application/json"}),
        413,
        "body",
        "payload_too_large",
    )


def test_unknown_routes_and_methods(client):
    error_of(client.get("/nope"), 404, type_="not_found")
    error_of(client.post("/v2/completions", json={}), 404, type_="not_found")
    error_of(client.get("/score"), 405, type_="method_not_allowed")
    error_of(client.get("/static/missing.js"), 404, type_="not_found")


def test_small_things_of_issue_13(client):
    """A huge number is not echoed whole; HEAD /health; no redirect on a trailing slash; a union
    field says every form it takes; Content-Length with Transfer-Encoding is refused (smuggling)."""
    err = error_of(client.post("/next-token", json={"text": "a", "top_k": int("9" * 3900)}), 413, "top_k")
    assert len(err["message"]) < 200 and "3900 characters" in err["message"]
    head = client.head("/health")
    assert head.status_code == 200 and head.headers["x-request-id"]
    r = client.post("/score/", json={"candidates": ["a"]}, follow_redirects=False)
    assert "no route POST /score/" in error_of(r, 404, type_="not_found")["message"]
    empty = error_of(client.post("/next-token", json={"text": []}), 422, "text")["message"]
    assert "expected a string or a list of strings" in empty and "at least 1 item" in empty
    assert "more error" not in empty
    err = error_of(client.post("/next-token", json={"text": [1]}), 422, "text")
    assert "`text.0`: Input should be a valid string" in err["message"]
    r = client.post(
        "/score",
        content=json.dumps({"candidates": ["a"]}).encode(),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked", "Content-Length": "20"},
    )
    err = error_of(r, 400, type_="invalid_request")
    assert "Content-Length and Transfer-Encoding" in err["message"] and r.headers["connection"] == "close"


def test_unexpected_errors_are_500_without_internals(settings, monkeypatch):
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        runner = app.state.registry.get(None)

        async def boom(*args, **kwargs):
            raise RuntimeError("secret internal detail /home/x/y.py")

        monkeypatch.setattr(runner, "score", boom)
        r = c.post("/score", json={"candidates": ["a"]})
        err = error_of(r, 500, type_="internal_error")
        assert "secret" not in r.text and "y.py" not in r.text and err["field"] is None


# -- docs, playground, settings ----------------------------------------------------------------------
def test_openapi_describes_every_field_with_its_limits(client, settings):
    spec = client.get("/openapi.json").json()
    for name in ("ScoreRequest", "NextTokenRequest", "GenerateRequest"):
        for field, prop in spec["components"]["schemas"][name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    score = spec["components"]["schemas"]["ScoreRequest"]["properties"]
    assert score["candidates"]["maxItems"] == settings.max_candidates
    assert score["context"]["maxLength"] == settings.max_text_chars
    gen = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert gen["max_new_tokens"]["maximum"] == settings.max_new_tokens
    assert gen["n"]["maximum"] == settings.max_n and gen["top_p"]["maximum"] == 1
    for path in ("/score", "/next-token", "/generate"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"413", "422", "404", "503"} <= set(responses)
    assert client.get("/docs").status_code == 200


def test_playground_and_static_files(client, settings, tmp_path):
    r = client.get("/")
    assert r.status_code == 200 and "rnnlm playground" in r.text
    assert r.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").text == "console.log('hi')"
    with TestClient(create_app(settings, static_dir=tmp_path / "absent")) as bare:
        error_of(bare.get("/"), 404, type_="not_found")


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("RNNLM_MODEL_DIRS", "weights/a, weights/b")
    monkeypatch.setenv("RNNLM_MAX_CANDIDATES", "7")
    monkeypatch.setenv("RNNLM_DEVICE", "cpu")
    s = Settings()
    assert s.model_dirs == ["weights/a", "weights/b"] and s.max_candidates == 7 and s.device == "cpu"
    monkeypatch.setenv("RNNLM_MODEL_DIRS", '["x/y"]')
    assert Settings().model_dirs == ["x/y"]
    monkeypatch.setenv("RNNLM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()
    monkeypatch.delenv("RNNLM_DEVICE")
    monkeypatch.delenv("RNNLM_MODEL_DIRS")
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
        # the served list that `rnnlm benchmark choose-default` recorded, the best reranker first
        chosen = json.loads(Path("weights/DEFAULT.json").read_text(encoding="utf-8"))
        assert get_settings().model_dirs == chosen["serve"] and chosen["serve"][0] == chosen["default"]
        assert get_settings().host == "127.0.0.1" and get_settings().port == 8000
    finally:
        get_settings.cache_clear()


def test_default_models_come_from_the_recorded_choice(tmp_path):
    from service.default_choice import FALLBACK_MODEL_DIRS, DefaultChoiceError, default_model_dirs

    assert default_model_dirs(tmp_path / "missing.json") == FALLBACK_MODEL_DIRS
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    choice = tmp_path / "DEFAULT.json"
    choice.write_text(json.dumps({"serve": [str(tmp_path / "b"), str(tmp_path / "a")]}))
    assert default_model_dirs(choice) == [str(tmp_path / "b"), str(tmp_path / "a")]  # in order
    # a model that is not there, or a file that is not a choice, is an error (test_startup_files.py)
    choice.write_text(json.dumps({"serve": [str(tmp_path / "gone"), str(tmp_path / "a")]}))
    with pytest.raises(DefaultChoiceError, match="gone"):
        default_model_dirs(choice)
    choice.write_text("not json")
    with pytest.raises(DefaultChoiceError, match="not valid JSON"):
        default_model_dirs(choice)


def test_device_resolution():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_startup_fails_clearly_on_a_bad_model_dir(tmp_path, settings):
    app = create_app(settings.model_copy(update={"model_dirs": [str(tmp_path / "none")]}))
    with pytest.raises(Exception, match="not a checkpoint directory"), TestClient(app):
        pass


def test_duplicate_model_names_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="share a name"):
        ModelRegistry.load([tiny_model_dir, tiny_model_dir], "cpu")


def test_a_default_past_a_smaller_limit_is_lowered(client):
    body = generate(client, prompt="", seed=5, temperature=2.0)  # default max_new_tokens 50 > limit 30
    assert body["num_tokens"] <= LIMITS["max_new_tokens"]


def test_runner_interleaves_work_and_closes_abandoned_streams(tiny_model_dir):
    import asyncio

    from model.inference.engine import EngineConfig
    from model.inference.generation import GenerationRequest
    from model.inference.sampling import SamplingParams

    registry = ModelRegistry.load([tiny_model_dir], "cpu")
    runner = registry.get(None)

    async def main():
        await registry.start(EngineConfig(threads=1))
        try:
            request = GenerationRequest(
                prompt="今天", max_new_tokens=25, sampling=SamplingParams(temperature=1.0, seed=1)
            )
            stream = runner.generate_stream(request)
            first = [await anext(stream) for _ in range(2)]
            ranking = await runner.score(["你先走"], ScoreOptions())  # served between two tokens
            await stream.aclose()  # what a disconnecting client causes
            await runner.score(["a"], ScoreOptions())  # a round trip through the worker
            return first, ranking, runner.engine.active_rows
        finally:
            await registry.stop(1.0)

    first, ranking, rows_after = asyncio.run(main())
    assert [e.sample for e in first] == [0, 0] and ranking.results[0].num_tokens == 4
    assert rows_after == 0  # no row is left behind by the abandoned stream


def test_a_body_without_the_json_content_type_is_explained(client):
    r = client.post("/score", content=b'{"candidates": ["a"]}', headers={"content-type": "text/plain"})
    assert "Content-Type: application/json" in error_of(r, 422, "body", "invalid_request")["message"]
