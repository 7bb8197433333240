"""The ecosystem's protocols: OpenAI's completions (/v1), /tokenize and /detokenize.

First through ``TestClient`` on tiny seeded models, then with real clients against a real
``rnnlm serve`` on 127.0.0.1: the official ``openai`` package, and lm-evaluation-harness's
``local-completions`` on a JSONL task that ``rnnlm benchmark rerank`` draws from a held-out split.

What must hold: the numbers of the native routes (/generate's samples for the same seed, /score's
log-probs), OpenAI's error shape naming the field, and no traffic beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from model.models.checkpoint import save_rnn
from model.text.tokenizer import BOS_ID, EOS_ID, UNK_ID
from rnnlm.bench.common import sse_blocks
from service.app import create_app
from service.settings import Settings

from ..conftest import build_tiny_model
from .reliability_support import free_port, save_endless_model, server_thread, spawn_server, stop

REPO = Path(__file__).resolve().parents[2]
LIMITS = dict(
    max_body_bytes=6000,
    max_text_chars=60,
    max_batch_texts=3,
    max_new_tokens=30,
    max_n=3,
    max_stop_strings=2,
    max_logprobs=5,
    sse_ping_s=0,
)
OPENAI_ERROR_KEYS = {"message", "type", "param", "code", "status", "request_id"}
NATIVE_ERROR_KEYS = {"type", "message", "field", "status", "request_id"}
KEY = "sk-rnnlm-test"  # the real server's API key: every client below must send it


@pytest.fixture(scope="module")
def gru_model_dir(tmp_path_factory):
    net, tok = build_tiny_model(cell="gru", seed=1)
    return save_rnn(tmp_path_factory.mktemp("models") / "tiny-gru", net, tok, {"note": "second model"})


@pytest.fixture(scope="module")
def settings(tiny_model_dir, gru_model_dir) -> Settings:
    return Settings(model_dirs=[str(tiny_model_dir), str(gru_model_dir)], **LIMITS)


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def openai_error_of(response, status: int, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape (with our status and request id beside it), naming the field."""
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == OPENAI_ERROR_KEYS and err["status"] == status
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert err["request_id"] == response.headers["x-request-id"]
    if param is not None:
        assert err["param"] == param and f"`{param}`" in err["message"]
    if code is not None:
        assert err["code"] == code
    assert "Traceback" not in err["message"]
    return err


def sse_data(raw: str) -> list[str]:
    """The ``data:`` payloads of a text/event-stream body, in order (comments skipped)."""
    blocks = sse_blocks(raw)
    assert all(set(block) == {"data"} for block in blocks), raw[:500]
    return [block["data"] for block in blocks]


def generate_choices(c, prompt: str, n: int, **params) -> list[dict]:
    """/generate's samples for the same request, in the completion's terms."""
    body = {"prompt": prompt, "n": n, "return_logprobs": True, **params}
    return c.post("/generate", json=body).json()["samples"]


# -- /v1/completions: the native routes' numbers ---------------------------------------------------
def test_completions_equal_generate_for_the_same_seed(client):
    prompts = ["今天", "厨房里"]
    params = {"temperature": 0.9, "top_p": 0.95, "seed": 7, "stop": ["了"]}
    body = {"prompt": prompts, "n": 2, "max_tokens": 12, "logprobs": 0, **params}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and out["model"] == "tiny-lstm"
    assert out["id"] == "cmpl-" + r.headers["x-request-id"]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]  # prompt index × n + sample index
    completion_tokens = 0
    for pi, prompt in enumerate(prompts):
        for j, sample in enumerate(generate_choices(client, prompt, 2, max_new_tokens=12, **params)):
            choice = out["choices"][pi * 2 + j]
            assert choice["text"] == sample["text"]
            assert choice["finish_reason"] == ("length" if sample["finish_reason"] == "length" else "stop")
            lp = choice["logprobs"]
            assert lp["tokens"] == [t["token"] for t in sample["logprobs"]]
            assert lp["token_logprobs"] == pytest.approx([t["logprob"] for t in sample["logprobs"]], abs=1e-5)
            assert all(set(top) == {tok} for top, tok in zip(lp["top_logprobs"], lp["tokens"], strict=True))
            completion_tokens += sample["num_tokens"]
    assert out["usage"] == {
        "prompt_tokens": 2 + 3,
        "completion_tokens": completion_tokens,
        "total_tokens": 5 + completion_tokens,
    }


def test_greedy_is_the_default_for_temperature_zero_and_the_model_field_selects(client):
    body = {"model": "tiny-gru", "prompt": "你", "max_tokens": 6, "temperature": 0}
    first = client.post("/v1/completions", json=body).json()
    assert first["model"] == "tiny-gru"
    native = client.post(
        "/generate", json={"model": "tiny-gru", "prompt": "你", "max_new_tokens": 6, "temperature": 0}
    )
    assert first["choices"][0]["text"] == native.json()["text"]


@pytest.mark.parametrize("text", ["厨房里食油用完了", "😀 mixed 文字 é", "a"])
def test_echo_scores_equal_score(client, text):
    body = {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 3}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert lp["tokens"] == list(text)
    native = client.post(
        "/score", json={"candidates": [text], "bos": False, "eos": False, "per_token": True}
    ).json()["results"][0]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # as OpenAI: nothing before it
    assert lp["token_logprobs"][1:] == pytest.approx(
        [t["logprob"] for t in native["token_logprobs"]], abs=1e-5
    )
    for i, (token, top) in enumerate(zip(lp["tokens"][1:], lp["top_logprobs"][1:], strict=True), start=1):
        assert 3 <= len(top) <= 4  # the 3 most likely and the token itself
        piece = token if token in top else "<unk>"  # an unknown character is <unk> to the vocabulary
        assert top[piece] == lp["token_logprobs"][i]
    if len(text) < 2:
        return
    # The alternatives are /next-token's after the same prefix.
    nxt = client.post("/next-token", json={"text": text[:1], "top_k": 3}).json()["next"]
    assert {t["token"]: t["logprob"] for t in nxt} == pytest.approx(
        {k: v for k, v in lp["top_logprobs"][1].items() if k in {t["token"] for t in nxt}}, abs=1e-5
    )


def test_token_prompts_and_a_leading_bos(client):
    text = "你先走吧"
    ids = client.post("/tokenize", json={"prompt": text, "add_special_tokens": True}).json()["tokens"]
    assert ids[0] == BOS_ID
    body = {"prompt": [ids, ids[1:]], "max_tokens": 0, "echo": True, "logprobs": 0}
    with_bos, without = client.post("/v1/completions", json=body).json()["choices"]
    assert with_bos["text"] == without["text"] == text
    first, second = with_bos["logprobs"], without["logprobs"]
    assert first["tokens"] == ["<bos>", *text] and first["text_offset"][:2] == [0, 0]
    native = client.post("/score", json={"candidates": [text], "eos": False, "per_token": True}).json()
    scored = [t["logprob"] for t in native["results"][0]["token_logprobs"]]
    assert first["token_logprobs"][0] is None  # <bos> only conditions: 你 is scored from it
    assert first["token_logprobs"][1:] == pytest.approx(scored, abs=1e-5)
    assert second["token_logprobs"][1:] == pytest.approx(scored[1:], abs=1e-5)
    # logprobs 0: each position lists only its own token
    assert first["top_logprobs"][1] == {"你": first["token_logprobs"][1]}
    # A text prompt and its ids give the same generation.
    gen = {"max_tokens": 8, "seed": 11}
    assert (
        client.post("/v1/completions", json={"prompt": text, **gen}).json()["choices"][0]["text"]
        == client.post("/v1/completions", json={"prompt": ids[1:], **gen}).json()["choices"][0]["text"]
    )


def test_unknown_token_ids_read_as_the_replacement_character(client):
    body = {"prompt": [5, UNK_ID, 6], "max_tokens": 0, "echo": True, "logprobs": 1}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"][1] == "\ufffd" and len(choice["text"]) == 3
    assert "<unk>" in choice["logprobs"]["top_logprobs"][1]  # the vocabulary's name for it


def test_text_offsets_count_characters_not_bytes(client):
    prompt = "😀é字 a"
    body = {"prompt": prompt, "max_tokens": 10, "echo": True, "logprobs": 1, "seed": 5}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    text, lp = choice["text"], choice["logprobs"]
    assert text.startswith(prompt) and lp["text_offset"][:5] == [0, 1, 2, 3, 4]
    for token, offset in zip(lp["tokens"], lp["text_offset"], strict=True):
        if token != "<eos>":
            assert text[offset : offset + len(token)] == token
    assert lp["text_offset"] == sorted(lp["text_offset"])


def test_stream_is_the_unstreamed_completion_in_chunks(client):
    body = {
        "prompt": ["今天", "你"],
        "n": 2,
        "max_tokens": 10,
        "seed": 3,
        "echo": True,
        "logprobs": 2,
        "stop": ["好"],
    }
    whole = client.post("/v1/completions", json=body).json()
    r = client.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    for want in whole["choices"]:
        mine = [ch["choices"][0] for ch in chunks[:-1] if ch["choices"][0]["index"] == want["index"]]
        assert "".join(c["text"] for c in mine) == want["text"]
        assert [c["finish_reason"] for c in mine][-1] == want["finish_reason"]
        assert all(c["finish_reason"] is None for c in mine[:-1])
        joined = {key: [x for c in mine for x in c["logprobs"][key]] for key in want["logprobs"]}
        assert joined["tokens"] == want["logprobs"]["tokens"]
        assert joined["token_logprobs"] == pytest.approx(want["logprobs"]["token_logprobs"], abs=1e-5)
        n_text = sum(t != "<eos>" for t in joined["tokens"])
        assert joined["text_offset"][:n_text] == want["logprobs"]["text_offset"][:n_text]
    assert {ch["id"] for ch in chunks} == {"cmpl-" + r.headers["x-request-id"]}


def test_max_tokens_zero_without_echo_and_null_fields(client):
    body = {
        "prompt": ["ab", "c"],
        "max_tokens": 0,
        "n": 2,
        "stop": None,
        "logprobs": None,
        "temperature": None,
    }
    out = client.post("/v1/completions", json=body).json()
    assert [(c["text"], c["finish_reason"], c["logprobs"]) for c in out["choices"]] == [
        ("", "length", None)
    ] * 4
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    streamed = client.post("/v1/completions", json={**body, "stream": True})
    assert sse_data(streamed.text)[-1] == "[DONE]"


# -- errors in OpenAI's shape ------------------------------------------------------------------------
INVALID = [
    ({"prompt": "a", "suffix": "b"}, 400, "suffix"),
    ({"prompt": "a", "best_of": 2}, 400, "best_of"),
    ({"prompt": "a", "logit_bias": {"5": 1.0}}, 400, "logit_bias"),
    ({"prompt": "a", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"prompt": "a", "frequency_penalty": -1}, 400, "frequency_penalty"),
    ({"prompt": "a", "functions": []}, 400, "functions"),  # not OpenAI's completions field at all
    ({"prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"prompt": "a", "top_p": 0}, 400, "top_p"),
    ({"prompt": "a", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "a", "stop": [""]}, 400, "stop.0"),
    ({"prompt": [5, 10_000]}, 400, "prompt.1"),  # outside the vocabulary
    ({"prompt": [[5], [5, EOS_ID]]}, 400, "prompt.1.1"),  # a special that is not text
    ({"prompt": [5, BOS_ID]}, 400, "prompt.1"),  # <bos> only first
    ({"prompt": "a", "logprobs": 6}, 413, "logprobs"),  # the configured limits, as everywhere
    ({"prompt": "a", "n": 4}, 413, "n"),
    ({"prompt": "a", "max_tokens": 31}, 413, "max_tokens"),
    ({"prompt": ["a", "b", "c", "d"]}, 413, "prompt"),
    ({"prompt": "字" * 61}, 413, "prompt"),
    ({"prompt": [7] * 61}, 413, "prompt"),
    ({"prompt": "a", "model": "nope"}, 404, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), INVALID, ids=[f"{p}-{s}" for _, s, p in INVALID])
def test_invalid_and_unsupported_fields_get_openai_errors(client, body, status, param):
    err = openai_error_of(client.post("/v1/completions", json=body), status, param)
    if param == "model":
        assert err["code"] == "model_not_found"


def test_errors_made_outside_the_route_are_openai_shaped_too(client):
    openai_error_of(client.get("/v1/chat/completions"), 404, code="not_found")
    openai_error_of(client.get("/v1/completions"), 405, code="method_not_allowed")
    big = client.post("/v1/completions", json={"prompt": "x" * 7000})
    openai_error_of(big, 413, "body", code="payload_too_large")
    raw = client.post("/v1/completions", content=b"{", headers={"content-type": "application/json"})
    openai_error_of(raw, 400, "body")
    openai_error_of(client.get("/v1/models/nope"), 404, "model", code="model_not_found")
    # The native routes keep their own shape.
    assert set(client.post("/score", json={}).json()["error"]) == NATIVE_ERROR_KEYS


def test_the_same_authentication_request_ids_and_metrics(tiny_model_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], api_key=KEY, sse_ping_s=0)
    app = create_app(settings)
    with TestClient(app) as c:
        for path, method in [("/v1/completions", "POST"), ("/v1/models", "GET"), ("/tokenize", "POST")]:
            r = c.request(method, path, json={"prompt": "a"})
            if path.startswith("/v1/"):
                openai_error_of(r, 401, "Authorization", code="unauthorized")
            else:
                assert r.status_code == 401
        auth = {"Authorization": f"Bearer {KEY}", "X-Request-ID": "trace-42"}
        r = c.post("/v1/completions", json={"prompt": "你", "max_tokens": 3, "seed": 1}, headers=auth)
        assert r.status_code == 200 and r.json()["id"] == "cmpl-trace-42"
        c.post("/v1/completions", json={"prompt": "a", "n": 0}, headers=auth)
        metrics = c.get("/metrics", headers=auth).text
    assert 'rnnlm_requests_total{endpoint="/v1/completions",method="POST",status="200"}' in metrics
    assert 'rnnlm_requests_total{endpoint="/v1/completions",method="POST",status="400"}' in metrics
    assert 'rnnlm_tokens_generated_total{model="tiny-lstm"}' in metrics


def test_the_same_admission_and_deadline(tmp_path):
    """One slot per model: an open /v1 stream holds it (503 for the next request, at once), and a
    completion past RNNLM_REQUEST_TIMEOUT_S is ended with 504, both in OpenAI's shape."""
    endless = save_endless_model(tmp_path / "endless")
    settings = Settings(
        model_dirs=[str(endless)],
        max_in_flight=1,
        request_timeout_s=2,
        max_new_tokens=10**6,
        max_request_tokens=2 * 10**6,  # a generation this long is within the cost a request may have
        max_tokens_in_flight=2 * 10**6,
        sse_ping_s=0,
    )
    body = {"prompt": "今天", "max_tokens": 10**6, "seed": 1}
    with server_thread(create_app(settings)) as base, httpx.Client(base_url=base, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as first:
            lines = first.iter_lines()  # kept: dropping it would close the stream (a client leaving)
            assert next(lines).startswith("data: ")
            refused = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 1})
            err = openai_error_of(refused, 503, code="overloaded")
            assert "RNNLM_MAX_IN_FLIGHT" in err["message"] and int(refused.headers["retry-after"]) >= 1
        for _ in range(300):  # the stream's slot is freed once its client has gone
            if c.post("/v1/completions", json={"prompt": "a", "max_tokens": 1}).status_code == 200:
                break
            time.sleep(0.01)
        openai_error_of(c.post("/v1/completions", json=body), 504, code="timeout")


def test_v1_models(client):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny-lstm", "tiny-gru"]
    assert client.get("/v1/models/tiny-gru").json()["id"] == "tiny-gru"


def test_compat_routes_stay_out_of_the_native_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/v1/completions", "/v1/models", "/tokenize", "/detokenize", "/tokenizer_info"} & set(paths)


# -- /tokenize, /detokenize ---------------------------------------------------------------------------
def test_tokenize_gives_ids_pieces_and_character_offsets(client):
    text = "天气😀好 é"
    out = client.post("/tokenize", json={"prompt": text}).json()
    assert out["count"] == len(text) == len(out["tokens"]) and out["oov"] >= 1
    for i, p in enumerate(out["pieces"]):
        assert (p["start"], p["end"], p["text"]) == (i, i + 1, text[i]) and p["id"] == out["tokens"][i]
        assert p["piece"] == (text[i] if p["id"] != UNK_ID else "<unk>")
    emoji = out["pieces"][2]
    assert emoji == {"id": UNK_ID, "piece": "<unk>", "text": "😀", "start": 2, "end": 3}
    # llama.cpp's names, and <bos> first on request
    llama = client.post("/tokenize", json={"content": text, "add_special": True}).json()
    assert llama["tokens"] == [BOS_ID, *out["tokens"]] and llama["pieces"][0]["piece"] == "<bos>"
    # and back: <unk> is the replacement character, other specials are nothing
    back = client.post("/detokenize", json={"tokens": [BOS_ID, *out["tokens"], EOS_ID]}).json()
    read_back = "".join(p["text"] if p["id"] != UNK_ID else "\ufffd" for p in out["pieces"])
    assert back["prompt"] == back["content"] == read_back
    assert client.post("/tokenize", json={"prompt": ""}).json()["tokens"] == []


def test_tokenizer_errors_and_info(client):
    r = client.post("/detokenize", json={"tokens": [4, 99_999]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "tokens.1"  # the native shape here
    assert (
        client.post("/tokenize", json={"prompt": "a", "with_pieces": True}).json()["error"]["field"]
        == "with_pieces"
    )
    assert client.post("/tokenize", json={"prompt": "a", "model": "nope"}).status_code == 404
    assert client.post("/detokenize", json={"tokens": [4] * 61}).status_code == 413
    info = client.get("/tokenizer_info", params={"model": "tiny-gru"}).json()
    assert info["model"] == "tiny-gru" and info["eos_token"] == "<eos>" and info["bos_token_id"] == BOS_ID


# -- real clients against a real server ---------------------------------------------------------------
@contextlib.contextmanager
def serving(model_dir: Path, log: Path) -> Iterator[str]:
    """``rnnlm serve`` on a free port of 127.0.0.1 with an API key; yields its base URL."""
    port = free_port()
    proc = spawn_server(model_dir, log, port, RNNLM_API_KEY=KEY)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=5) as c:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/ready").status_code == 200:
                        break
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"rnnlm serve did not become ready:\n{log.read_text()[-3000:]}")
        if proc.poll() is not None:
            pytest.fail(f"rnnlm serve exited:\n{log.read_text()[-3000:]}")
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    with serving(tiny_model_dir, tmp_path_factory.mktemp("serve") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def native(tiny_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tiny_server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def oai(tiny_server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{tiny_server}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def test_openai_client_completions_equal_generate(oai, native):
    assert [m.id for m in oai.models.list()] == ["tiny-lstm"]
    done = oai.completions.create(
        model="tiny-lstm", prompt="今天", max_tokens=12, n=3, seed=2024, temperature=1.0
    )
    samples = native.post(
        "/generate", json={"prompt": "今天", "max_new_tokens": 12, "n": 3, "seed": 2024, "temperature": 1.0}
    ).json()["samples"]
    assert [c.text for c in done.choices] == [s["text"] for s in samples]
    assert [c.index for c in done.choices] == [0, 1, 2]
    assert done.usage is not None and done.usage.completion_tokens == sum(s["num_tokens"] for s in samples)
    again = oai.completions.create(model="tiny-lstm", prompt="今天", max_tokens=12, n=3, seed=2024)
    assert [c.text for c in again.choices] == [c.text for c in done.choices]  # same seed, same text


def test_openai_client_streams_the_same_text(oai):
    kwargs = dict(model="tiny-lstm", prompt=["你", "厨房"], max_tokens=10, n=2, seed=9, stop=["了"])
    whole = oai.completions.create(**kwargs)
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for part in oai.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        for choice in part.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
        if part.usage is not None:
            assert whole.usage is not None and part.usage.completion_tokens == whole.usage.completion_tokens
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}


def test_openai_client_echo_logprobs_equal_score(oai, native):
    text = "人民日报发表新年讲话"
    done = oai.completions.create(model="tiny-lstm", prompt=text, max_tokens=0, echo=True, logprobs=2)
    lp = done.choices[0].logprobs
    assert lp is not None and lp.tokens == list(text) and lp.text_offset == list(range(len(text)))
    scored = native.post(
        "/score", json={"candidates": [text], "bos": False, "eos": False, "per_token": True}
    ).json()["results"][0]
    assert lp.token_logprobs is not None and lp.token_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx([t["logprob"] for t in scored["token_logprobs"]], abs=1e-5)
    assert math.fsum(lp.token_logprobs[1:]) == pytest.approx(scored["logprob"], abs=1e-5)


def test_openai_client_errors(oai, tiny_server):
    with pytest.raises(openai.BadRequestError) as bad:
        oai.completions.create(model="tiny-lstm", prompt="a", suffix="b")
    assert bad.value.param == "suffix" and bad.value.code == "invalid_request"
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="no-such-model", prompt="a")
    wrong = openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()


# -- lm-evaluation-harness ------------------------------------------------------------------------------
PD98 = REPO / "data" / "pd98"
PD98_MODEL = REPO / "weights" / "pd98-char-lstm"
TASK = """task: rnnlm_pair
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: ""
target_delimiter: ""
doc_to_choice: "{{{{candidates}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def draw_pairs(model_dir: Path, data: Path, kind: str, size: int, out: Path, *extra: str) -> Path:
    """The task's items: ``rnnlm benchmark rerank`` draws an original and one distractor per
    held-out sentence (a JSONL file of rerank items) and says where it saved them."""
    cmd = [str(Path(sys.executable).parent / "rnnlm"), "benchmark", "rerank", "--model", str(model_dir)]
    cmd += ["--data", str(data), "--set", kind, "--split", "valid", "--size", str(size), "--distractors", "1"]
    cmd += ["--sets-dir", str(out), *extra]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    return Path(json.loads(done.stdout.strip().splitlines()[-1])[kind]["set"])


def run_lm_eval(base: str, model: str, items: Path, work: Path) -> tuple[float, list[dict]]:
    """lm-eval's local-completions on the items, tokenizing through the server's /tokenize; no hub."""
    tasks = work / "tasks"
    tasks.mkdir()
    (tasks / "rnnlm_pair.yaml").write_text(TASK.format(items=items), encoding="utf-8")
    model_args = ",".join(
        [
            f"model={model}",
            f"base_url={base}/v1/completions",
            "tokenizer_backend=remote",  # /tokenizer_info, /tokenize, /detokenize of this server
            f"custom_prefix_token_id={BOS_ID}",  # an empty context is <bos>: the sentence starts there
            f"auth_token={KEY}",
            "max_retries=1",
        ]
    )
    env = {
        **os.environ,
        "OPENAI_API_KEY": KEY,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    cmd = [str(Path(sys.executable).parent / "lm-eval"), "run", "--model", "local-completions"]
    cmd += ["--model_args", model_args, "--tasks", "rnnlm_pair", "--include_path", str(tasks)]
    cmd += ["--output_path", str(work / "out"), "--log_samples"]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = (work / "out").rglob("results_*.json")
    [samples] = (work / "out").rglob("samples_rnnlm_pair_*.jsonl")
    acc = json.loads(results.read_text(encoding="utf-8"))["results"]["rnnlm_pair"]["acc,none"]
    return acc, [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]


def check_against_score(c: httpx.Client, acc: float, samples: list[dict]) -> float:
    """lm-eval's log-likelihoods are /score's (from <bos>, no <eos>), and so is its accuracy.

    Log-probs agree within the engine's batching tolerance (1e-5 a token, tests/model/test_engine.py),
    so a pick may differ only where two candidates score within it. Returns /score's accuracy."""
    correct, near_ties = [], 0
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        results = c.post("/score", json={"candidates": doc["candidates"], "eos": False}).json()["results"]
        scores = [r["logprob"] for r in results]
        theirs = [float(r[0][0]) for r in s["resps"]]
        assert theirs == pytest.approx(scores, rel=1e-6, abs=1e-5)
        correct.append(scores.index(max(scores)) == doc["answer"])  # argmax: the first of equal scores
        near_ties += abs(scores[0] - scores[1]) < 1e-4 * len(doc["candidates"][0])
    ours = sum(correct) / len(correct)
    assert abs(acc - ours) <= near_ties / len(correct) + 1e-12
    return ours


def test_lm_eval_on_pairs_from_the_tiny_corpus(tiny_server, native, tiny_model_dir, tiny_corpus, tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is in the dev extras (pip install -e '.[dev]')")
    # The tiny corpus has no homophones to draw; word order gives a pair per held-out sentence.
    items = draw_pairs(tiny_model_dir, tiny_corpus, "wordorder", 50, tmp_path / "sets", "--min-len", "4")
    acc, samples = run_lm_eval(tiny_server, "tiny-lstm", items, tmp_path)
    assert len(samples) >= 3  # one per held-out sentence with a swap to make
    check_against_score(native, acc, samples)


def test_lm_eval_on_homophone_pairs_from_pd98_valid(tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is in the dev extras (pip install -e '.[dev]')")
    if not (PD98 / "valid.txt").exists():
        pytest.skip(
            "data/pd98 is absent (CI has no copy; `make data` writes it); the tiny-corpus test runs instead"
        )
    if not (PD98_MODEL / "config.json").exists():
        pytest.skip(f"the shipped model is missing: {PD98_MODEL.relative_to(REPO)}")
    model = tmp_path / "pd98-char-lstm"
    shutil.copytree(PD98_MODEL, model)  # a training run may replace the shipped files meanwhile
    items = draw_pairs(model, PD98, "homophone", 100, tmp_path / "sets")
    with serving(model, tmp_path / "server.log") as base:
        acc, samples = run_lm_eval(base, "pd98-char-lstm", items, tmp_path)
        assert len(samples) == 100 and acc > 0.8  # the LSTM tells the original from a homophone
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            check_against_score(c, acc, samples)
