"""POST /decode: confusion networks and SLF lattices searched with a served model, each path's
lm_logprob what /score says of its text, every bound a 413 naming its field, bad input a 422 naming
it (a lattice's line), a backward model refused, and a search nobody waits for stopped on the worker."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.decoding import DecodeOptions, decode_cn, decode_slf
from model.inference.engine import Engine, EngineConfig
from model.models.checkpoint import save_rnn
from model.models.loading import load_model
from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.models.prefix import PassStopped
from model.text.tokenizer import Tokenizer
from service.app import create_app
from service.schemas import LATTICE_CHARS_PER_ARC, DecodeRequest
from service.settings import Settings

from ..conftest import TINY_LINES
from .test_score_rescoring import build_backward_model

LIMITS = dict(
    max_text_chars=60,
    max_decode_slots=6,
    max_decode_alternatives=4,
    max_decode_arcs=8,
    max_decode_beam=8,
    max_decode_cost=2000,
)
CN = [
    [["厨", -0.4], ["出", -0.9], ["除", -1.5]],
    [["房", -0.3], ["方", -0.6]],
    [["里", -0.1], ["", -2.5]],
    [["食油", -0.7], ["的油", -0.8], ["石油", -0.5]],
]
# words on nodes (HTK), !NULL at both ends; the path 0-1-3-5 reads 厨房
LATTICE = """VERSION=1.0
N=6 L=7
I=0 t=0.00 W=!NULL
I=1 t=0.20 W=厨
I=2 t=0.20 W=出
I=3 t=0.40 W=房
I=4 t=0.40 W=方
I=5 t=0.60 W=!NULL
J=0 S=0 E=1 a=-10.0 l=-2.0
J=1 S=0 E=2 a=-9.5 l=-1.0
J=2 S=1 E=3 a=-5.0 l=-0.5
J=3 S=1 E=4 a=-4.8 l=-3.0
J=4 S=2 E=4 a=-5.1 l=-0.2
J=5 S=3 E=5 a=0.0 l=0.0
J=6 S=4 E=5 a=0.0 l=0.0
"""


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decode-models")
    tok = Tokenizer.build(TINY_LINES, kind="char")
    back, back_tok = build_backward_model()
    return {
        "tiny-lstm": tiny_model_dir,
        "tiny-kn": save_ngram(root / "tiny-kn", build_ngram(tok, TINY_LINES, 3, "kn")),
        "tiny-backward": save_rnn(root / "tiny-backward", back, back_tok, {"note": "backward"}),
    }


@pytest.fixture(scope="module")
def client(model_dirs):
    settings = Settings(model_dirs=[str(d) for d in model_dirs.values()], device="cpu", **LIMITS)
    with TestClient(create_app(settings)) as c:
        yield c


def error_of(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["status"] == status and err["field"] == field, err
    assert err["message"].startswith(f"`{field}`"), err
    return err


def scored(client, model: str, text: str) -> float:
    r = client.post("/score", json={"candidates": [text], "model": model})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["logprob"]


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-kn"])
def test_a_confusion_network_decodes_best_first_each_path_scored_as_score_does(client, model_dirs, model):
    body = {"slots": CN, "beam": 8, "nbest": 5, "lm_weight": 1.5, "length_bonus": 0.3, "model": model}
    r = client.post("/decode", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"model", "results", "search"} and data["model"] == model
    results = data["results"]
    # an n-gram's hypotheses merge by their last tokens: one path per context reaches the end
    assert len(results) == (5 if model == "tiny-lstm" else 3) and len({p["text"] for p in results}) == len(
        results
    )
    scores = [p["score"] for p in results]
    assert scores == sorted(scores, reverse=True)
    for p in results:
        assert set(p) == {"text", "words", "score", "lm_logprob", "acoustic", "num_tokens"}
        assert "".join(p["words"]) == p["text"]
        assert p["lm_logprob"] == pytest.approx(scored(client, model, p["text"]), abs=1e-4)
        total = p["acoustic"] + 1.5 * p["lm_logprob"] + 0.3 * p["num_tokens"]
        assert p["score"] == pytest.approx(total, abs=1e-4)
    # the library's answer, through the engine's worker
    want = decode_cn(
        load_model(model_dirs[model]), CN, DecodeOptions(beam=8, nbest=5, lm_weight=1.5, length_bonus=0.3)
    )
    assert [p["text"] for p in results] == [p.text for p in want]
    search = data["search"]
    assert search["steps"] >= 1 and search["expansions"] >= 1 and 0 < search["stepped_rows"] <= search["cost"]


def test_an_slf_lattice_decodes_and_its_acoustic_is_the_arcs_sum(client, model_dirs):
    r = client.post("/decode", json={"lattice": LATTICE, "beam": 4, "nbest": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert {p["text"] for p in results} == {"厨房", "厨方", "出方"}  # the lattice's three paths
    acoustic = {"厨房": -15.0, "厨方": -14.8, "出方": -14.6}
    for p in results:
        assert p["acoustic"] == pytest.approx(acoustic[p["text"]])
        assert p["lm_logprob"] == pytest.approx(scored(client, "tiny-lstm", p["text"]), abs=1e-4)
    lm = load_model(model_dirs["tiny-lstm"])
    assert [p["text"] for p in results] == [
        p.text for p in decode_slf(lm, LATTICE, DecodeOptions(beam=4, nbest=4))
    ]
    # the first pass's LM enters an arc's score only when asked
    weighted = client.post(
        "/decode", json={"lattice": LATTICE, "beam": 4, "nbest": 4, "lattice_lm_weight": 1.0}
    )
    best = {p["text"]: p["acoustic"] for p in weighted.json()["results"]}
    assert best["厨房"] == pytest.approx(-15.0 - 2.5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slots": [[["我", -0.1]]] * 7}, "slots"),
        ({"slots": [[["我", -0.1]], [["我", -0.1]], [["a", 0.0]] * 5]}, "slots.2"),
        ({"slots": CN, "beam": 9}, "beam"),
        ({"slots": [[["长" * 61, -0.1]]]}, "slots.0.0.0"),
        ({"lattice": "#" * (8 * LATTICE_CHARS_PER_ARC + 1)}, "lattice"),
        ({"lattice": LATTICE.replace("N=6 L=7", "N=6 L=9") + "J=7 S=0 E=5\nJ=8 S=1 E=5\n"}, "lattice"),
        # within every size bound, past RNNLM_MAX_DECODE_COST: words of many tokens, a wide beam
        (
            {"slots": [[["厨房里食油用完了", -0.1], ["厨房里的油用完了", -0.2]]] * 6, "beam": 8, "nbest": 8},
            "slots",
        ),
    ],
)
def test_every_bound_is_a_413_naming_its_field(client, body, field):
    error_of(client.post("/decode", json=body), 413, field)


def test_the_cost_refusal_says_what_to_lower(client):
    body = {"slots": [[["厨房里食油用完了", -0.1], ["厨房里的油用完了", -0.2]]] * 6, "beam": 8}
    err = error_of(client.post("/decode", json=body), 413, "slots")
    assert "RNNLM_MAX_DECODE_COST" in err["message"] and "beam" in err["message"]


def test_the_engine_admits_a_decode_at_its_cost(model_dirs):
    settings = Settings(
        model_dirs=[str(model_dirs["tiny-lstm"])], device="cpu", max_text_chars=60, max_request_tokens=100
    )
    with TestClient(create_app(settings)) as c:
        err = error_of(c.post("/decode", json={"slots": CN, "beam": 4}), 413, "slots")
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"]


@pytest.mark.parametrize(
    ("lattice", "line"),
    [
        (LATTICE.replace("J=2 S=1 E=3", "J=2 S=1 E=9"), "line 11"),
        (LATTICE.replace("a=-9.5", "a=loud"), "line 10"),
        (LATTICE.replace("I=1 t=0.20", "I=1 t=soon"), "line 4"),
        (LATTICE.replace("I=3 t=0.40", "I=1 t=0.40"), "line 6"),
    ],
)
def test_a_bad_lattice_is_a_422_naming_its_line(client, lattice, line):
    err = error_of(client.post("/decode", json={"lattice": lattice}), 422, "lattice")
    assert f"`lattice`: {line}:" in err["message"], err


def test_a_lattice_without_a_path_or_with_a_cycle_is_a_422(client):
    cyclic = LATTICE.replace("N=6 L=7", "N=6 L=8") + "J=7 S=3 E=1 a=0 l=0\n"
    assert "cycle" in error_of(client.post("/decode", json={"lattice": cyclic}), 422, "lattice")["message"]
    no_text = "VERSION=1.0\n"
    error_of(client.post("/decode", json={"lattice": no_text}), 422, "lattice")


@pytest.mark.parametrize("body", [{"slots": CN, "lattice": LATTICE}, {}, {"beam": 4}])
def test_exactly_one_of_slots_and_lattice(client, body):
    err = error_of(client.post("/decode", json=body), 422, "body")
    assert "`slots`" in err["message"] and "`lattice`" in err["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"slots": [[["\\u6211", NaN]]]}', "slots.0.0.1"),
        (b'{"slots": [[["\\u6211", -0.1], ["\\u5367", 1e999]]]}', "slots.0.1.1"),
        (b'{"slots": [[["\\u6211", "-0.1"]]]}', "slots.0.0.1"),
        (b'{"slots": [[["\\u6211"]]]}', "slots.0.0.1"),  # the missing score
        (b'{"slots": [[]]}', "slots.0"),
        (b'{"slots": []}', "slots"),
        (b'{"slots": [[["\\ud800", -0.1]]]}', "slots.0.0.0"),
        (b'{"slots": [[["\\u6211", -0.1]]], "beam": 2, "nbest": 3}', "nbest"),
        (b'{"slots": [[["\\u6211", -0.1]]], "acoustic_scale": 2.0}', "acoustic_scale"),
        (b'{"slots": [[["\\u6211", -0.1]]], "beam_threshold": 0}', "beam_threshold"),
        (b'{"slots": [[["\\u6211", -0.1]]], "beam": 0}', "beam"),
    ],
)
def test_invalid_fields_are_a_422_naming_them(client, raw, field):
    r = client.post("/decode", content=raw, headers={"content-type": "application/json"})
    error_of(r, 422, field)


def test_models_unknown_or_backward_are_refused(client):
    error_of(client.post("/decode", json={"slots": CN, "model": "nope"}), 404, "model")
    err = error_of(client.post("/decode", json={"slots": CN, "model": "tiny-backward"}), 422, "model")
    assert "backward" in err["message"]


def test_every_field_is_described_and_the_limits_are_in_the_schema(client):
    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["DecodeRequest"]["properties"]
    assert set(props) == set(DecodeRequest.model_fields)
    assert all(p.get("description") for name, p in props.items() if name != "model"), props
    assert "RNNLM_MAX_DECODE_SLOTS" in props["slots"]["description"]
    assert props["beam"]["maximum"] == 8
    text = next(b for b in props["lattice"]["anyOf"] if b.get("type") == "string")
    assert text["maxLength"] == 8 * LATTICE_CHARS_PER_ARC
    results = spec["components"]["schemas"]["DecodedResult"]["properties"]
    assert all(p.get("description") for p in results.values())


def test_a_job_nobody_waits_for_is_stopped_on_the_worker(tiny_model_dir):
    """Engine.run_job: a cancelled caller turns should_stop True; the job's PassStopped is the engine's."""
    lm = load_model(tiny_model_dir)
    running, stopped = threading.Event(), threading.Event()

    def job(_lm, should_stop) -> None:
        running.set()
        while not should_stop():
            pass
        stopped.set()
        raise PassStopped("nobody waits")

    async def main() -> None:
        async with Engine(lm, EngineConfig(max_request_tokens=1000)) as engine:
            assert await engine.run_job("decode", lambda lm, stop: lm.kind, 5) == lm.kind
            task = asyncio.ensure_future(engine.run_job("decode", job, 5))
            await asyncio.to_thread(running.wait, 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(stopped.wait, 5)
            deadline = time.monotonic() + 5
            while engine.stats.passes_stopped == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert engine.stats.kinds["decode"].requests == 2 and engine.stats.passes_stopped == 1
            assert engine.tokens_in_flight == 0  # released before the stop was counted

    asyncio.run(main())
