"""POST /embed: the answer's shape and values (the library's, through the engine), normalize, every
bound a 4xx naming its field, models that cannot embed named, a backward model allowed, the metric
and the OpenAPI description of each field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pytest
import torch
from fastapi.testclient import TestClient

from model.inference.embedding import embed_texts
from model.models.checkpoint import save_rnn
from model.models.lm import POOLINGS
from model.models.loading import load_model
from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.text.tokenizer import Tokenizer
from service.app import create_app
from service.schemas import EmbedRequest
from service.settings import Settings

from ..conftest import TINY_LINES
from .test_score_rescoring import build_backward_model

LIMITS = dict(max_text_chars=60, max_batch_texts=4, max_request_tokens=100)
TEXTS = ["今天天气很好", "明天天气也很好", "", "厨房里食油用完了"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embed-models")
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


@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_answer_holds_one_vector_per_text_as_the_library_makes_it(client, model_dirs, pooling):
    r = client.post("/embed", json={"texts": TEXTS, "pooling": pooling})
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {"model", "dim", "pooling", "embeddings", "tokens"}
    assert data["model"] == "tiny-lstm" and data["pooling"] == pooling  # the default model
    lm = load_model(model_dirs["tiny-lstm"])
    assert data["dim"] == lm.net.config.hidden_dim == 16
    assert len(data["embeddings"]) == len(TEXTS) and all(len(v) == data["dim"] for v in data["embeddings"])
    want = embed_texts(lm, TEXTS, pooling)
    assert data["tokens"] == want.tokens == [6, 7, 0, 8]
    assert torch.allclose(torch.tensor(data["embeddings"]), want.vectors, atol=1e-5)


def test_the_default_pooling_is_last_and_normalize_gives_unit_vectors(client):
    plain = client.post("/embed", json={"texts": TEXTS}).json()
    assert plain["pooling"] == "last"
    unit = client.post("/embed", json={"texts": TEXTS, "normalize": True}).json()
    for raw, v in zip(plain["embeddings"], unit["embeddings"], strict=True):
        norm = math.sqrt(sum(x * x for x in raw))
        assert math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-5)
        assert v == pytest.approx([x / norm for x in raw], abs=1e-5)


def test_a_text_vector_does_not_depend_on_the_batch(client):
    together = client.post("/embed", json={"texts": TEXTS, "pooling": "mean"}).json()["embeddings"]
    for i, text in enumerate(TEXTS):
        alone = client.post("/embed", json={"texts": [text], "pooling": "mean"}).json()["embeddings"][0]
        assert alone == pytest.approx(together[i], abs=1e-5)


def test_a_backward_model_embeds_the_text_read_right_to_left(client, model_dirs):
    r = client.post("/embed", json={"texts": ["你先走吧"], "model": "tiny-backward"})
    assert r.status_code == 200, r.text
    lm = load_model(model_dirs["tiny-backward"])
    want = lm.embed([lm.tokenizer.encode("你先走吧").ids])  # backward ids: 吧 走 先 你
    assert torch.allclose(torch.tensor(r.json()["embeddings"]), want, atol=1e-5)


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"texts": []}, 422, "texts"),
        ({"texts": "今天"}, 422, "texts"),
        ({"texts": ["a"] * 5}, 413, "texts"),  # RNNLM_MAX_BATCH_TEXTS
        ({"texts": ["今天", "天" * 61]}, 413, "texts.1"),  # RNNLM_MAX_TEXT_CHARS
        ({"texts": ["天" * 50, "天" * 50]}, 413, "texts"),  # 100 tokens + 2 <bos>: RNNLM_MAX_REQUEST_TOKENS
        ({"texts": ["今天"], "pooling": "max"}, 422, "pooling"),
        ({"texts": ["今天"], "normalize": "yes"}, 422, "normalize"),
        ({"texts": ["今天"], "text": "x"}, 422, "text"),
        ({"texts": ["今天"], "model": "nope"}, 404, "model"),
        ({"texts": ["今天"], "model": "tiny-kn"}, 422, "model"),
    ],
)
def test_each_bound_and_error_names_its_field(client, body, status, field):
    err = error_of(client.post("/embed", json=body), status, field)
    if field == "model" and status == 422:
        assert "'tiny-kn'" in err["message"] and "no hidden states" in err["message"]


def test_the_texts_tokens_with_their_bos_are_bounded_together(client):
    err = error_of(client.post("/embed", json={"texts": ["天" * 50, "天" * 50]}), 413, "texts")
    assert "costs 102 tokens (every text with its <bos>)" in err["message"]
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"]
    assert client.post("/embed", json={"texts": ["天" * 49, "天" * 49]}).status_code == 200  # 100 exactly


def test_the_metric_counts_the_tokens_embedded(client):
    def counted() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('rnnlm_tokens_embedded_total{model="tiny-lstm"}'):
                return float(line.split()[-1])
        return 0.0

    before = counted()
    client.post("/embed", json={"texts": TEXTS})
    assert counted() == before + 21


def test_openapi_describes_every_field(client):
    spec = client.get("/openapi.json").json()
    assert "/embed" in spec["paths"]
    schemas = spec["components"]["schemas"]
    for name in ("EmbedRequest", "EmbedResponse"):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), (name, field)
    texts = schemas["EmbedRequest"]["properties"]["texts"]
    assert texts["maxItems"] == LIMITS["max_batch_texts"] and "RNNLM_MAX_BATCH_TEXTS" in texts["description"]
    assert get_args(EmbedRequest.model_fields["pooling"].annotation) == POOLINGS  # one list of poolings
