"""/v1/completions inside every field bound (issue 25 items 1-4 and 8, issue 24 item 2): a
completion's whole cost is counted before any work against the limits the native routes use (413
naming the limit when it can never fit, 503 only when it could fit later), its answer is bounded
and built off the event loop, the echo's log-probs and alternatives come from one pass over each
prompt, generated tokens carry their alternatives from the decoding step itself, and one request
never holds the whole generation batch."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from model.inference.engine import Overloaded
from model.inference.generation import Sample
from model.text.tokenizer import BOS_ID, UNK_ID
from service.app import create_app
from service.compat_schemas import CompletionRequest
from service.completions import Prompt, Turns, complete
from service.errors import ApiError
from service.settings import Settings

from .reliability_support import save_endless_model, server_thread
from .test_openai import openai_error_of, sse_data

REPO = Path(__file__).resolve().parents[2]
TEXT = "今天天气很好明天天气也很好人民日报发表新年讲话新华社记者报道中国人民银行发布消息他们在厨房里做饭"
BOUNDS = dict(
    max_text_chars=60,
    max_batch_texts=8,
    max_new_tokens=40,
    max_n=4,
    max_logprobs=5,
    max_request_tokens=400,
    max_tokens_in_flight=800,
    max_logprob_entries=1000,
    max_answer_bytes=60_000,
    sse_ping_s=0,
)


def long_text(chars: int) -> str:
    return (TEXT * (chars // len(TEXT) + 1))[:chars]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    """Small limits, so that every bound is within reach of a small request."""
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], **BOUNDS))) as c:
        yield c


@pytest.fixture(scope="module")
def roomy(tiny_model_dir):
    """The default limits (10,000 characters a text, 65,536 tokens a request)."""
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], sse_ping_s=0))) as c:
        yield c


def engine_of(c: TestClient):
    return c.app.state.registry.get(None).engine  # type: ignore[attr-defined]


# -- issue 24 item 2: echo + prompt log-probs from one pass -------------------------------------------
@pytest.mark.parametrize("chars", [600, 2000])
def test_echo_logprobs_of_a_long_prompt_answer_200_from_one_pass(roomy, chars):
    """lm-eval's log-likelihood request: 500 from 444 characters on before; now any length within
    the limits, each token's alternatives from the same single pass as its log-prob."""
    text = long_text(chars)
    stats = engine_of(roomy).stats
    before = stats.positions_computed
    r = roomy.post("/v1/completions", json={"prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0})
    assert r.status_code == 200, r.text[:500]
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == list(text) and lp["token_logprobs"][0] is None
    # linear: <bos> and the prompt are read once (its last token is only scored, never fed)
    assert stats.positions_computed - before == chars
    native = roomy.post(
        "/score", json={"candidates": [text], "bos": False, "eos": False, "per_token": True}
    ).json()["results"][0]
    assert lp["token_logprobs"][1:] == pytest.approx(
        [t["logprob"] for t in native["token_logprobs"]], abs=1e-5
    )
    for token, logprob, top in zip(
        lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True
    ):
        assert 1 <= len(top) <= 2 and top[token] == logprob
        assert max(top.values()) >= logprob  # the most likely token is at least as likely as this one


def test_echo_alternatives_are_the_distribution_the_token_was_scored_from(roomy):
    """A token's own log-prob and its alternatives come from one distribution: /next-token's after
    the same prefix (from <bos>), whether the prompt gave its <bos> or not."""
    text = "今天天气很好"
    ids = roomy.post("/tokenize", json={"prompt": text, "add_special_tokens": True}).json()["tokens"]
    body = {"prompt": [ids, ids[1:]], "echo": True, "logprobs": 5, "max_tokens": 0}
    with_bos, without = (c["logprobs"] for c in roomy.post("/v1/completions", json=body).json()["choices"])
    assert without["top_logprobs"][1:] == with_bos["top_logprobs"][2:]
    for i in range(1, len(text) + 1):
        nxt = roomy.post("/next-token", json={"text": text[: i - 1], "top_k": 5}).json()["next"]
        top, token = with_bos["top_logprobs"][i], with_bos["tokens"][i]
        assert top[token] == with_bos["token_logprobs"][i]
        assert {t["token"]: t["logprob"] for t in nxt} == pytest.approx(
            {k: v for k, v in top.items() if k in {t["token"] for t in nxt}}, abs=1e-5
        )


def test_echo_logprobs_stream_for_a_long_prompt(roomy):
    text = long_text(600)
    body = {"prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0, "stream": True}
    r = roomy.post("/v1/completions", json=body)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert not any("error" in ch for ch in chunks), data[:3]
    echoed = chunks[0]["choices"][0]["logprobs"]
    assert echoed["tokens"] == list(text) and len(echoed["top_logprobs"]) == 600


def test_echo_past_the_request_tokens_is_413_naming_the_limit(client):
    """8 prompts of 60 characters: 8 × 61 = 488 tokens to score (<bos> included), past RNNLM_MAX_REQUEST_TOKENS
    (400) — before any work; 6 of them (366) fit and answer 200."""
    body = {"prompt": [long_text(60)] * 8, "echo": True, "logprobs": 1, "max_tokens": 0}
    err = openai_error_of(client.post("/v1/completions", json=body), 413, "prompt", code="payload_too_large")
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"] and "488" in err["message"]
    ok = client.post("/v1/completions", json={**body, "prompt": [long_text(60)] * 6})
    assert ok.status_code == 200, ok.text[:300]
    assert [len(c["logprobs"]["tokens"]) for c in ok.json()["choices"]] == [60] * 6


def test_the_runner_maps_the_engines_refusals_of_alternatives(client):
    """The runner is the one door into the engine: its cost refusal is a 413 there too."""
    runner = client.app.state.registry.get(None)

    async def ask() -> None:
        await runner.alternatives([[BOS_ID, *[5] * 450]], top_k=1)

    with pytest.raises(ApiError) as refused:
        asyncio.run(ask())
    assert refused.value.status == 413 and "RNNLM_MAX_REQUEST_TOKENS" in refused.value.message


def test_routes_reach_the_engine_only_through_the_runner():
    """No module of the service but the runner touches a runner's ``engine``."""
    offenders = []
    for path in sorted((REPO / "service").rglob("*.py")):
        if path.name == "runner.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


# -- issue 25 item 1: the whole cost, counted first ---------------------------------------------------
def test_a_completion_past_the_request_tokens_is_413_before_any_work(client):
    """8 prompts × n 4 × max_tokens 40 = 1,280 tokens to generate: 413 naming max_tokens and the
    limit, and the engine never saw it."""
    engine = engine_of(client)
    requests = engine.stats.kinds["generate"].requests
    body = {"prompt": ["今"] * 8, "n": 4, "max_tokens": 40}
    err = openai_error_of(client.post("/v1/completions", json=body), 413, "max_tokens")
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"] and "1280" in err["message"]
    err = openai_error_of(client.post("/v1/completions", json={**body, "stream": True}), 413, "max_tokens")
    assert engine.stats.kinds["generate"].requests == requests
    ok = client.post("/v1/completions", json={**body, "n": 1, "max_tokens": 20, "seed": 1})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 8


# -- issue 25 item 2: bounded answers, off the event loop ---------------------------------------------
def test_logprob_entries_past_the_limit_are_413_naming_logprobs(client):
    """4 prompts × n 4 × 30 echoed tokens × (1 + 5) = 2,880 entries > RNNLM_MAX_LOGPROB_ENTRIES."""
    body = {"prompt": [long_text(30)] * 4, "n": 4, "echo": True, "logprobs": 5, "max_tokens": 0}
    err = openai_error_of(client.post("/v1/completions", json=body), 413, "logprobs")
    assert "RNNLM_MAX_LOGPROB_ENTRIES" in err["message"] and "2880" in err["message"]
    err = openai_error_of(client.post("/v1/completions", json={**body, "stream": True}), 413, "logprobs")


def test_answer_bytes_past_the_limit_are_413_naming_the_largest_part(client, tiny_model_dir):
    """8 prompts of 60 characters echoed to each of n 4 choices: 8 × 4 × 180 bytes of text alone,
    and with a generous max_tokens too, is more than RNNLM_MAX_ANSWER_BYTES allows."""
    body = {"prompt": [long_text(60)] * 8, "n": 4, "echo": True, "max_tokens": 0}
    small = client.post("/v1/completions", json=body)
    assert small.status_code == 200  # 5,760 bytes of text
    settings = Settings(model_dirs=[str(tiny_model_dir)], **{**BOUNDS, "max_answer_bytes": 5000})
    with TestClient(create_app(settings)) as c:
        err = openai_error_of(c.post("/v1/completions", json=body), 413, "echo")
        assert "RNNLM_MAX_ANSWER_BYTES" in err["message"]


def test_the_completion_answer_is_built_and_serialized_off_the_event_loop(client, monkeypatch):
    from service.routes import openai as route

    threads: list[bool] = []
    original = route.render_completion

    def recording(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            threads.append(True)
        except RuntimeError:
            threads.append(False)
        return original(*args, **kwargs)

    monkeypatch.setattr(route, "render_completion", recording)
    body = {"prompt": ["今天", "你"], "n": 2, "echo": True, "logprobs": 2, "max_tokens": 3, "seed": 1}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 4
    assert threads == [False]  # once, in a worker thread with no event loop


# -- issue 25 item 3: a request that fits in turns is never "busy" ------------------------------------
def test_a_completion_larger_than_the_engine_queue_runs_in_turns(tiny_model_dir):
    """8 prompts with an engine queue of 4 (each prompt's generation is one queued request, each
    echo was one more): served in turns, never 503 on an idle server."""
    settings = Settings(model_dirs=[str(tiny_model_dir)], engine_queue=4, max_request_rows=4, sse_ping_s=0)
    prompts = [long_text(k + 1) for k in range(8)]
    body = {"prompt": prompts, "max_tokens": 2, "seed": 3, "echo": True, "logprobs": 1}
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text[:300]
        choices = r.json()["choices"]
        assert [ch["index"] for ch in choices] == list(range(8))
        for prompt, choice in zip(prompts, choices, strict=True):
            assert choice["text"].startswith(prompt)
            alone = c.post("/v1/completions", json={**body, "prompt": prompt}).json()["choices"][0]
            assert choice["text"] == alone["text"]  # the same seed: the same sample, in turns or not
        streamed = c.post("/v1/completions", json={**body, "stream": True})
        assert streamed.status_code == 200 and sse_data(streamed.text)[-1] == "[DONE]"
        assert not any('"error"' in d for d in sse_data(streamed.text))


# -- issue 25 item 1: one completion does not starve other clients ------------------------------------
def test_one_completion_leaves_generation_rows_to_other_clients(tmp_path):
    """A streamed completion of 4 prompts × n 2 that never ends, on an engine of 8 rows: it runs
    at most RNNLM_MAX_REQUEST_ROWS (4) samples at once, so another client's 2-token /generate
    is served while it runs (before, it waited for all 8 rows, past its deadline)."""
    endless = save_endless_model(tmp_path / "endless")
    settings = Settings(
        model_dirs=[str(endless)],
        max_generation_rows=8,
        max_n=2,
        max_request_rows=4,
        max_new_tokens=100_000,
        max_request_tokens=10**7,
        max_tokens_in_flight=10**7,
        request_timeout_s=0,
        sse_ping_s=0,
    )
    app = create_app(settings)
    body = {"prompt": ["今天", "你", "我们", "他"], "n": 2, "max_tokens": 100_000, "stream": True, "seed": 1}
    with (
        server_thread(app) as base,
        httpx.Client(base_url=base, timeout=30) as c,
        c.stream("POST", "/v1/completions", json=body) as huge,
    ):
        lines = huge.iter_lines()
        assert next(lines).startswith("data: ")
        # (before, it waited for rows that never came: the hang guard below is all it got)
        small = c.post("/generate", json={"prompt": "今", "max_new_tokens": 2, "seed": 1}, timeout=10)
        assert small.status_code == 200, small.text[:300]
        assert small.json()["num_tokens"] == 2
        engine = app.state.registry.get(None).engine
        assert engine.active_rows <= 4


# -- issue 25 item 4: generation log-probs at any length -----------------------------------------------
@pytest.fixture(scope="module")
def endless_client(tmp_path_factory):
    endless = save_endless_model(tmp_path_factory.mktemp("models") / "endless")
    settings = Settings(model_dirs=[str(endless)], max_new_tokens=600, sse_ping_s=0)
    with TestClient(create_app(settings)) as c:
        yield c


def test_generated_logprobs_of_600_tokens_answer_200(endless_client):
    """500 after the work was done from about 442 generated tokens on before: each token's
    alternatives come from the decoding step that chose it, so no pass is run for them."""
    c = endless_client
    body = {"prompt": "今", "max_tokens": 600, "logprobs": 2, "seed": 1}
    r = c.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text[:300]
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == 600 and choice["finish_reason"] == "length"
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert 2 <= len(top) <= 3 and top[token] == logprob
    # The alternatives are those of the same positions scored as an echoed prompt (<bos> first).
    ids = c.post("/tokenize", json={"prompt": "今", "add_special_tokens": True}).json()["tokens"]
    gen_ids = c.post("/tokenize", json={"prompt": choice["text"]}).json()["tokens"]
    if UNK_ID not in gen_ids[:50]:  # no <unk> among them: the text reads back as the same ids
        echo = {"prompt": ids + gen_ids[:50], "echo": True, "logprobs": 2, "max_tokens": 0}
        scored = c.post("/v1/completions", json=echo).json()["choices"][0]["logprobs"]
        for j in range(50):
            want = scored["top_logprobs"][2 + j]
            got = lp["top_logprobs"][j]
            common = set(want) & set(got)
            assert len(common) >= 2
            assert {k: got[k] for k in common} == pytest.approx({k: want[k] for k in common}, abs=1e-4)


def test_streamed_generated_logprobs_of_600_tokens(endless_client):
    body = {"prompt": "今", "max_tokens": 600, "logprobs": 1, "seed": 2, "stream": True}
    r = endless_client.post("/v1/completions", json=body)
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert not any("error" in ch for ch in chunks)
    tops = [t for ch in chunks for t in ch["choices"][0]["logprobs"]["top_logprobs"]]
    assert len(tops) == 600 and all(1 <= len(t) <= 2 for t in tops)


# -- issue 25 item 8: a bounded echo of the model's name -----------------------------------------------
def test_an_unknown_model_name_is_not_echoed_whole(client):
    name = "x" * 5000
    r = client.get(f"/v1/models/{name}")
    openai_error_of(r, 404, "model", code="model_not_found")
    assert len(r.content) < 1000 and "5000 characters" in r.text
    r = client.post("/v1/completions", json={"prompt": "a", "model": "y" * 50})
    assert len(r.content) < 1000
    r = client.post("/score", json={"candidates": ["a"], "model": "z" * 5000})
    assert r.status_code >= 400 and len(r.content) < 1000


def test_the_answer_limits_are_checked_at_startup(tiny_model_dir):
    with pytest.raises(ValidationError, match="RNNLM_MAX_LOGPROB_ENTRIES"):
        Settings(model_dirs=[str(tiny_model_dir)], max_logprobs=20, max_logprob_entries=20)
    Settings(model_dirs=[str(tiny_model_dir)], max_logprobs=20, max_logprob_entries=21)


def test_a_later_turn_waits_for_room_in_a_full_queue():
    """Only the first turn may answer 503 (before the answer starts); a later one that finds the
    engine's queue full (other clients' requests) waits for room and runs."""

    class Stream:
        def __init__(self, prompt: str) -> None:
            self.prompt, self.max_backlog = prompt, None

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def collect(self) -> list[Sample]:
            return [Sample(seed=0, text=self.prompt, finish_reason="length")]

    class Runner:
        full = 2  # the second prompt's turn finds the queue full twice

        def begin(self, request):
            if request.prompt == "b" and self.full:
                self.full -= 1
                raise Overloaded("generate", 4, 1.0)
            return Stream(request.prompt)

    body = CompletionRequest(prompt=["a", "b"], max_tokens=1, seed=1)
    prompts = [Prompt("a", [5], ["a"]), Prompt("b", [6], ["b"])]
    runner = Runner()
    turns = Turns(runner, body, prompts, 1, window=1, backlog=None)
    turns.start()
    done = asyncio.run(complete(turns, prompts, None))
    assert [[s.text for s in ss] for ss in done.samples] == [["a"], ["b"]] and runner.full == 0
