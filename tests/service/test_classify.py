"""POST /classify and a classifier served beside the models (RNNLM_HEAD_DIRS, service/heads.py): the
answer is the library's probabilities and label, every bound a 4xx naming its field, the classifier
chosen by name (404 / 422 naming `model`, a tagger is not a classifier), /models lists it with its
labels, and a request holds a slot of its classifier, as /tag's of its tagger."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from model.heads.classifier import class_probabilities, classifier_from_lm, classify_texts, load_classifier
from model.heads.classifier import save_classifier as save
from service.app import create_app
from service.heads import load_head
from service.settings import Settings

from . import test_tag
from .test_tag import LIMITS, error_of

tagger_dir = test_tag.tagger_dir  # test_tag.py's tiny tagger, used here by its name
LABELS = ("neg", "pos")
TEXTS = ["今天天气很好", "", "厨房里的油用完了", "😀x 好"]


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny seeded classifier on the tiny language model (random head: its labels are valid, not good)."""
    torch.manual_seed(0)
    classifier, tokenizer = classifier_from_lm(
        tiny_model_dir, LABELS, dropout=0.0, head_dropout=0.0, head_dim=8
    )
    metrics = {
        "task": "text classification: neg/pos",
        "test": {"accuracy": 0.5, "texts": 4},
        "train_texts": 12,
        "data": {"dir": "/srv/data/tiny-reviews"},
    }
    return save(tmp_path_factory.mktemp("heads") / "tiny-sentiment", classifier.eval(), tokenizer, metrics)


@pytest.fixture(scope="module")
def client(tiny_model_dir, classifier_dir, tagger_dir):
    heads = [str(classifier_dir), str(tagger_dir)]
    settings = Settings(model_dirs=[str(tiny_model_dir)], head_dirs=heads, device="cpu", **LIMITS)
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_answer_is_the_librarys_label_and_probabilities(client, classifier_dir):
    r = client.post("/classify", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["model"] == "tiny-sentiment" and len(data["results"]) == len(TEXTS)  # the one classifier
    classifier, tok, _ = load_classifier(classifier_dir)
    probs = class_probabilities(classifier, tok, TEXTS)
    for res, (label, p), row in zip(
        data["results"], classify_texts(classifier, tok, TEXTS), probs, strict=True
    ):
        assert res["label"] == label and res["probability"] == pytest.approx(p, abs=1e-6)
        assert list(res["probabilities"]) == list(LABELS)  # every label, in the classifier's order
        assert list(res["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-6)
        assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert res["probability"] == max(res["probabilities"].values())
    # a text's answer does not depend on the batch, and naming the classifier changes nothing
    alone = client.post("/classify", json={"texts": [TEXTS[2]], "model": "tiny-sentiment"}).json()
    assert alone["results"][0]["probabilities"] == pytest.approx(
        data["results"][2]["probabilities"], abs=1e-5
    )


def test_every_bound_is_a_4xx_naming_its_field(client):
    error_of(client.post("/classify", json={"texts": ["好"] * 5}), 413, "texts")  # RNNLM_MAX_BATCH_TEXTS
    error_of(
        client.post("/classify", json={"texts": ["好", "好" * 61]}), 413, "texts.1"
    )  # RNNLM_MAX_TEXT_CHARS
    err = error_of(client.post("/classify", json={"texts": ["好" * 30] * 4}), 413, "texts")  # 120 characters
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"] and "120" in err["message"]
    error_of(client.post("/classify", json={"texts": []}), 422, "texts")
    error_of(client.post("/classify", json={"texts": ["好", 3]}), 422, "texts.1")
    error_of(client.post("/classify", json={"text": "好"}), 422, "text")
    error_of(client.post("/classify", json={"texts": ["好"], "model": ""}), 422, "model")


def test_the_classifier_is_named_by_model(client):
    err = error_of(client.post("/classify", json={"texts": ["好"], "model": "nope"}), 404, "model")
    assert "tiny-sentiment" in err["message"]
    err = error_of(client.post("/classify", json={"texts": ["好"], "model": "tiny-lstm"}), 422, "model")
    assert "language model" in err["message"]
    err = error_of(client.post("/classify", json={"texts": ["好"], "model": "tiny-tagger"}), 422, "model")
    assert "a tagger, not a classifier" in err["message"]
    err = error_of(client.post("/tag", json={"texts": ["好"], "model": "tiny-sentiment"}), 422, "model")
    assert "a classifier, not a tagger" in err["message"]
    assert client.post("/tag", json={"texts": ["好"]}).json()["model"] == "tiny-tagger"  # /tag's default


def test_no_classifier_served_is_a_404_that_says_how_to_serve_one(tiny_model_dir, tagger_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], head_dirs=[str(tagger_dir)], device="cpu")
    with TestClient(create_app(settings)) as c:
        err = error_of(c.post("/classify", json={"texts": ["好"]}), 404, "model")
        assert "RNNLM_HEAD_DIRS" in err["message"] and "rnnlm train-classifier" in err["message"]


def test_models_lists_the_classifier_with_its_labels(client):
    heads = {h["name"]: h for h in client.get("/models").json()["heads"]}
    assert set(heads) == {"tiny-sentiment", "tiny-tagger"}
    head = heads["tiny-sentiment"]
    assert head["kind"] == "classifier" and head["classes"] == list(LABELS) and head["labels"] == 2
    assert head["tokenizer"] == "char" and head["parameters"] > 0 and head["architecture"]["head_dim"] == 8
    assert head["metrics"] == {"test": {"accuracy": 0.5, "texts": 4}}
    assert head["training"] == {
        "task": "text classification: neg/pos",
        "train_texts": 12,
        "corpus": "tiny-reviews",  # no server path
    }


def test_a_request_holds_a_slot_of_its_classifier(tiny_model_dir, classifier_dir):
    settings = Settings(
        model_dirs=[str(tiny_model_dir)], head_dirs=[str(classifier_dir)], device="cpu", max_in_flight=1
    )
    with TestClient(create_app(settings)) as c:
        admission = c.app.state.admission
        with admission.slot("tiny-sentiment", False):  # the classifier's one slot is taken
            r = c.post("/classify", json={"texts": ["好"]})
            assert r.status_code == 503, r.text
            assert c.post("/embed", json={"texts": ["好"]}).status_code == 200  # the model's slots are apart
        assert c.post("/classify", json={"texts": ["好"]}).status_code == 200


def test_the_openapi_schema_documents_classify_and_its_limits(client):
    spec = client.get("/openapi.json").json()
    assert "/classify" in spec["paths"]
    texts = spec["components"]["schemas"]["ClassifyRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 4 and texts["items"]["maxLength"] == 60


def test_the_head_opens_by_its_kind(classifier_dir):
    head = load_head(classifier_dir, "cpu")
    assert head.kind == "classifier" and head.name == "tiny-sentiment" and head.classes == list(LABELS)
