"""POST /score for rescoring: length units, a sweep of weight pairs, several models with weights,
and a backward (right-to-left) model served beside forward ones (direction both; no generation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from model.models.checkpoint import save_rnn
from model.models.config import ModelConfig
from model.models.loading import load_model
from model.models.network import RNNLM
from model.text.batching import pad_batch, with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer
from service.app import create_app
from service.settings import Settings

from ..conftest import TINY_LINES, build_tiny_model

LIMITS = dict(max_candidates=8, max_sweep=5, max_text_chars=60, sse_ping_s=0)
CANDS = ["厨房里食油用完了", "厨房里石油用完了", "你先走吧", "今天 天气 很好"]


def build_backward_model(seed: int = 2, steps: int = 30) -> tuple[RNNLM, Tokenizer]:
    """A tiny seeded right-to-left model: the forward fixture's recipe on a backward tokenizer."""
    torch.manual_seed(seed)
    tok = Tokenizer.build(TINY_LINES, kind="char", direction="backward")
    net = RNNLM(
        ModelConfig(
            vocab_size=tok.vocab_size, cell="gru", emb_dim=16, hidden_dim=16, num_layers=1, dropout=0.0
        )
    )
    batch = pad_batch([with_boundaries(tok.encode(s).ids) for s in TINY_LINES])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), tok


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rescoring-models")
    gru, gru_tok = build_tiny_model(cell="gru", seed=1)
    back, back_tok = build_backward_model()
    return {
        "tiny-lstm": tiny_model_dir,
        "tiny-gru": save_rnn(root / "tiny-gru", gru, gru_tok, {"note": "second forward model"}),
        "tiny-backward": save_rnn(root / "tiny-backward", back, back_tok, {"note": "backward model"}),
    }


@pytest.fixture(scope="module")
def client(model_dirs):
    settings = Settings(model_dirs=[str(d) for d in model_dirs.values()], device="cpu", **LIMITS)
    with TestClient(create_app(settings)) as c:
        yield c


def score(client, **body) -> dict:
    r = client.post("/score", json={"candidates": CANDS, **body})
    assert r.status_code == 200, r.text
    return r.json()


def error_of(r, status: int, field: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and f"`{field}`" in err["message"], err
    return err


def logprobs_of(client, model: str) -> list[float]:
    return [r["logprob"] for r in score(client, model=model)["results"]]


# -- without the new fields: as before -------------------------------------------------------------------
def test_absent_fields_keep_the_original_answer(client):
    body = score(client, length_bonus=0.5)
    assert body["model"] == "tiny-lstm" and body["sweep"] is None
    for r in body["results"]:
        assert r["lm"] is None
        assert r["length"] == r["num_tokens"] == len(r["text"]) + 1  # per scored token, <eos> included
        assert r["score"] == pytest.approx(r["logprob"] + 0.5 * r["num_tokens"], abs=1e-9)


# -- length_unit -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "unit,lengths",
    [("tokens", [8, 8, 4, 8]), ("chars", [8, 8, 4, 6]), ("words", [1, 1, 1, 3])],
)
def test_length_unit(client, unit, lengths):
    body = score(client, length_bonus=0.25, length_unit=unit, external_scores=[1.0, 0.0, -1.0, 2.0])
    assert [r["length"] for r in body["results"]] == lengths
    for r, n, ext in zip(body["results"], lengths, [1.0, 0.0, -1.0, 2.0], strict=True):
        assert r["score"] == pytest.approx(r["logprob"] + ext + 0.25 * n, abs=1e-9)
    scores = [r["score"] for r in body["results"]]
    assert body["ranking"] == sorted(range(len(CANDS)), key=lambda i: -scores[i])


# -- sweep -----------------------------------------------------------------------------------------------
def test_sweep_best_equals_ranking_each_pair_from_the_logprobs(client):
    pairs = [
        {"lm_weight": 1.0, "length_bonus": 0.0},
        {"lm_weight": 0.0, "length_bonus": -1.0},
        {"lm_weight": 0.1, "length_bonus": 3.0},
        {"lm_weight": 2, "length_bonus": -0.5},
        {"lm_weight": 0.0, "length_bonus": 1.0},
    ]
    external = [0.0, 3.0, -2.0, 1.0]
    body = score(client, sweep=pairs, external_scores=external, length_unit="chars")
    assert [(s["lm_weight"], s["length_bonus"]) for s in body["sweep"]] == [
        (p["lm_weight"], p["length_bonus"]) for p in pairs
    ]
    results = body["results"]
    for pair, got in zip(pairs, body["sweep"], strict=True):
        scores = [
            pair["lm_weight"] * r["logprob"] + e + pair["length_bonus"] * r["length"]
            for r, e in zip(results, external, strict=True)
        ]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        assert got["best"] == best and got["score"] == pytest.approx(scores[best], abs=1e-9)
    assert len({s["best"] for s in body["sweep"]}) > 1
    # the pairs leave the request's own ranking alone (lm_weight 1, length_bonus 0)
    assert body["ranking"] == score(client, external_scores=external)["ranking"]


def test_sweep_with_direction_both_varies_the_combined_lm_term(client):
    body = score(client, direction="both", sweep=[{"lm_weight": 0.5, "length_bonus": 0.0}])
    terms = [r["lm"]["tiny-lstm"] + r["lm"]["tiny-backward"] for r in body["results"]]
    best = max(range(len(terms)), key=lambda i: (terms[i], -i))
    assert body["sweep"][0]["best"] == best
    assert body["sweep"][0]["score"] == pytest.approx(0.5 * terms[best], abs=1e-6)


@pytest.mark.parametrize(
    "sweep,status,field",
    [
        ([{"lm_weight": 1.0, "length_bonus": 0.0}] * 6, 413, "sweep"),
        ([], 422, "sweep"),
        ([{"lm_weight": 1.0}], 422, "sweep.0.length_bonus"),
        ([{"lm_weight": 1.0, "length_bonus": 0.0, "x": 1}], 422, "sweep.0.x"),
        ([{"lm_weight": "1", "length_bonus": 0.0}], 422, "sweep.0.lm_weight"),
        ([{"lm_weight": 1e9, "length_bonus": 0.0}], 422, "sweep.0.lm_weight"),
    ],
)
def test_bad_sweeps_name_their_field(client, sweep, status, field):
    error_of(client.post("/score", json={"candidates": ["a"], "sweep": sweep}), status, field)


# -- several models with weights -------------------------------------------------------------------------
WEIGHTS = {
    "first_pass_weight": 0.5,
    "length_bonus": 0.2,
    "length_unit": "chars",
    "models": {"tiny-lstm": 0.8, "tiny-backward": 0.3, "tiny-gru": 0.1},
    "dev": {"cer": 0.12, "utterances": 100},  # metadata `rnnlm tune` writes: ignored
    "tuned_on": "dev.jsonl",
}


def test_weights_total_is_the_weighted_sum_of_each_model_alone(client):
    external = [-3.0, -1.5, -8.0, -4.0]
    body = score(client, weights=WEIGHTS, external_scores=external, per_token=True)
    assert body["model"] == ["tiny-lstm", "tiny-backward", "tiny-gru"]
    alone = {name: logprobs_of(client, name) for name in WEIGHTS["models"]}
    chars = [len(c.replace(" ", "")) for c in CANDS]
    for i, r in enumerate(body["results"]):
        assert r["lm"] == pytest.approx({m: alone[m][i] for m in alone}, abs=1e-6)
        want = 0.5 * external[i] + sum(w * alone[m][i] for m, w in WEIGHTS["models"].items()) + 0.2 * chars[i]
        assert r["score"] == pytest.approx(want, abs=1e-5)
        assert r["length"] == chars[i]
        assert r["logprob"] == pytest.approx(alone["tiny-lstm"][i], abs=1e-6)  # the first model's
        assert [t["token"] for t in r["token_logprobs"]] == [*CANDS[i], "<eos>"]
    scores = [r["score"] for r in body["results"]]
    assert body["ranking"] == sorted(range(len(CANDS)), key=lambda i: -scores[i])
    assert sorted(r["rank"] for r in body["results"]) == [1, 2, 3, 4]


def test_weights_of_one_model_equal_lm_weight(client):
    one = score(client, weights={"models": {"tiny-gru": 0.7}, "length_bonus": 0.1, "length_unit": "tokens"})
    plain = score(client, model="tiny-gru", lm_weight=0.7, length_bonus=0.1, length_unit="tokens")
    assert one["model"] == ["tiny-gru"] and one["ranking"] == plain["ranking"]
    for a, b in zip(one["results"], plain["results"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


@pytest.mark.parametrize(
    "extra,status,field",
    [
        ({"weights": {"models": {"nope": 1.0}}}, 404, "weights.models.nope"),
        ({"weights": {"models": {}}}, 422, "weights.models"),
        ({"weights": {"first_pass_weight": 1.0}}, 422, "weights.models"),
        ({"weights": {"models": {"tiny-lstm": 1e7}}}, 422, "weights.models.tiny-lstm"),
        ({"weights": {"models": {"tiny-lstm": 1.0}, "length_unit": "bytes"}}, 422, "weights.length_unit"),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "lm_weight": 0.5}, 422, "lm_weight"),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "length_bonus": 0.5}, 422, "length_bonus"),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "length_unit": "words"}, 422, "length_unit"),
        (
            {"weights": {"models": {"tiny-lstm": 1.0}}, "sweep": [{"lm_weight": 1, "length_bonus": 0}]},
            422,
            "sweep",
        ),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "direction": "both"}, 422, "direction"),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "model": "tiny-gru"}, 422, "model"),
        ({"weights": {"models": {"tiny-lstm": 1.0}}, "normalize": "token"}, 422, "normalize"),
        ({"weights": {"models": {"tiny-backward": 1.0}}, "eos": False}, 422, "eos"),
        ({"length_unit": "bytes"}, 422, "length_unit"),
    ],
)
def test_bad_weights_name_their_field(client, extra, status, field):
    err = error_of(client.post("/score", json={"candidates": ["a"], **extra}), status, field)
    if field in ("lm_weight", "length_bonus"):
        assert "weights" in err["message"]  # says which to use


# -- a backward model and direction ----------------------------------------------------------------------
def test_backward_model_scores_the_whole_sentence_right_to_left(client, model_dirs):
    body = score(client, model="tiny-backward", per_token=True)
    lm = load_model(model_dirs["tiny-backward"])
    direct = lm.sequence_logprobs([[BOS_ID, *lm.tokenizer.encode(c).ids, EOS_ID] for c in CANDS])
    for cand, r, lps in zip(CANDS, body["results"], direct, strict=True):
        assert r["logprob"] == pytest.approx(float(lps.sum()), abs=1e-6)
        assert [t["token"] for t in r["token_logprobs"]] == [*reversed(cand), "<eos>"]  # its reading order
    assert body["results"][0]["logprob"] != pytest.approx(logprobs_of(client, "tiny-lstm")[0], abs=1e-3)


def test_direction_both_adds_forward_and_weighted_backward(client):
    forward, backward = logprobs_of(client, "tiny-lstm"), logprobs_of(client, "tiny-backward")
    body = score(
        client, direction="both", backward_weight=0.4, length_bonus=0.1, external_scores=[0, 1, 2, 3]
    )
    assert body["model"] == ["tiny-lstm", "tiny-backward"]
    for i, r in enumerate(body["results"]):
        want = forward[i] + 0.4 * backward[i] + i + 0.1 * r["num_tokens"]
        assert r["score"] == pytest.approx(want, abs=1e-5)
        assert r["lm"] == pytest.approx({"tiny-lstm": forward[i], "tiny-backward": backward[i]}, abs=1e-6)
        assert r["logprob"] == pytest.approx(forward[i], abs=1e-6)
    # the same partner for the second forward model (the only backward model served)
    gru = score(client, model="tiny-gru", direction="both")
    assert gru["model"] == ["tiny-gru", "tiny-backward"]


def test_direction_backward_scores_with_the_partner(client):
    body = score(client, model="tiny-gru", direction="backward")
    assert body["model"] == "tiny-backward"
    assert [r["logprob"] for r in body["results"]] == pytest.approx(
        logprobs_of(client, "tiny-backward"), abs=1e-6
    )
    assert [list(r["lm"]) for r in body["results"]] == [["tiny-backward"]] * len(CANDS)


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"model": "tiny-backward", "context": "他说"}, "context"),
        ({"model": "tiny-backward", "bos": False}, "bos"),
        ({"model": "tiny-backward", "eos": False}, "eos"),
        ({"direction": "both", "context": "他说"}, "context"),
        ({"direction": "backward", "eos": False}, "eos"),
        ({"model": "tiny-backward", "direction": "both"}, "direction"),
        ({"direction": "both", "normalize": "token"}, "normalize"),
        ({"backward_weight": 0.5}, "backward_weight"),
        ({"direction": "sideways"}, "direction"),
        ({"direction": "both", "backward_weight": -1e7}, "backward_weight"),
    ],
)
def test_what_a_backward_model_cannot_score_is_named(client, extra, field):
    error_of(client.post("/score", json={"candidates": ["你先走"], **extra}), 422, field)


def test_direction_without_a_backward_model_says_how_to_serve_one(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        err = error_of(c.post("/score", json={"candidates": ["a"], "direction": "both"}), 422, "direction")
        assert "--reverse" in err["message"] and "RNNLM_MODEL_DIRS" in err["message"]


def test_backward_models_setting_picks_the_partner(model_dirs):
    dirs = [str(d) for d in model_dirs.values()]
    mapping = {"tiny-lstm": "tiny-backward", "tiny-gru": "tiny-lstm"}
    with TestClient(create_app(Settings(model_dirs=dirs, device="cpu", backward_models=mapping))) as c:
        assert c.post("/score", json={"candidates": ["a"], "direction": "both"}).json()["model"] == [
            "tiny-lstm",
            "tiny-backward",
        ]
        err = error_of(
            c.post("/score", json={"candidates": ["a"], "model": "tiny-gru", "direction": "both"}),
            422,
            "direction",
        )
        assert "not a backward model" in err["message"]


# -- a backward model never generates ------------------------------------------------------------------
@pytest.mark.parametrize(
    "path,body",
    [
        ("/generate", {"model": "tiny-backward", "prompt": "你", "max_new_tokens": 3}),
        ("/generate", {"model": "tiny-backward", "prompt": "你", "stream": True}),
        ("/next-token", {"model": "tiny-backward", "text": "你先"}),
    ],
)
def test_generation_on_a_backward_model_is_refused(client, path, body):
    err = error_of(client.post(path, json=body), 422, "model")
    assert "backward" in err["message"]


@pytest.mark.parametrize("stream,max_tokens", [(False, 3), (True, 3), (False, 0)])
def test_completions_on_a_backward_model_are_refused(client, stream, max_tokens):
    """Even max_tokens 0 (echo scoring) reads the prompt as an open prefix, which a backward model cannot."""
    body = {
        "model": "tiny-backward",
        "prompt": "你",
        "max_tokens": max_tokens,
        "stream": stream,
        "echo": True,
    }
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "model" and "backward" in err["message"]


def test_models_show_each_direction(client):
    models = {m["name"]: m["direction"] for m in client.get("/models").json()["models"]}
    assert models == {"tiny-lstm": "forward", "tiny-gru": "forward", "tiny-backward": "backward"}


def test_openapi_documents_the_new_fields(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    props = schemas["ScoreRequest"]["properties"]
    for name in ("length_unit", "sweep", "weights", "direction", "backward_weight"):
        assert props[name].get("description"), name
    assert "maxItems" in str(props["sweep"]) and "RNNLM_MAX_SWEEP" in props["sweep"]["description"]
    assert "right to left" in schemas["CandidateResult"]["properties"]["token_logprobs"]["description"]
