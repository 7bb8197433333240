"""/tokenize and /detokenize on a backward (right-to-left) model, and beside the model routes:
offsets stay inside the text, ids read back as the text they came from, and neither route takes
a model's admission slot (they run no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.models.checkpoint import save_rnn
from model.text.tokenizer import UNK_ID
from service.app import create_app
from service.settings import Settings

from .test_score_rescoring import build_backward_model

TEXT = "天😀气"  # 😀 is unknown to the tiny vocabulary: <unk>, one character, four UTF-8 bytes


@pytest.fixture(scope="module")
def backward_dir(tmp_path_factory) -> Path:
    back, tok = build_backward_model()
    return save_rnn(tmp_path_factory.mktemp("backward") / "tiny-backward", back, tok, {"note": "backward"})


@pytest.fixture(scope="module")
def client(tiny_model_dir, backward_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir), str(backward_dir)], device="cpu", max_in_flight=1)
    with TestClient(create_app(settings)) as c:
        yield c


def tokenize(client: TestClient, text: str, model: str = "tiny-backward", **extra) -> dict:
    r = client.post("/tokenize", json={"prompt": text, "model": model, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("text", [TEXT, "今天天气很好", "厨房里😀😀的油", "", "a"])
def test_backward_offsets_stay_inside_the_text_and_name_each_piece(client, text):
    out = tokenize(client, text)
    assert out["count"] == len(text)
    for p in out["pieces"]:
        assert 0 <= p["start"] <= p["end"] <= len(text), p
        assert text[p["start"] : p["end"]] == p["text"], p
    # the model reads right to left: its ids are the text's pieces from the last one
    assert [p["text"] for p in out["pieces"]] == list(reversed(text))
    assert [p["start"] for p in out["pieces"]] == list(reversed(range(len(text))))


def test_backward_tokenize_the_issue_case(client):
    pieces = tokenize(client, TEXT)["pieces"]
    assert [(p["start"], p["end"]) for p in pieces] == [(2, 3), (1, 2), (0, 1)]
    assert pieces[1]["id"] == UNK_ID and pieces[1]["text"] == "😀"


@pytest.mark.parametrize("text", ["今天天气很好", "厨房里的油", "天"])
def test_backward_detokenize_reads_back_the_text_in_reading_order(client, text):
    ids = tokenize(client, text)["tokens"]
    back = client.post("/detokenize", json={"tokens": ids, "model": "tiny-backward"}).json()
    assert back["prompt"] == back["content"] == text
    # with <bos> first (add_special_tokens) too: specials read as nothing
    ids = tokenize(client, text, add_special_tokens=True)["tokens"]
    assert client.post("/detokenize", json={"tokens": ids, "model": "tiny-backward"}).json()["prompt"] == text


def test_forward_offsets_are_unchanged(client):
    out = tokenize(client, TEXT, model="tiny-lstm")
    assert [(p["start"], p["end"], p["text"]) for p in out["pieces"]] == [
        (0, 1, "天"),
        (1, 2, "😀"),
        (2, 3, "气"),
    ]
    back = client.post("/detokenize", json={"tokens": out["tokens"]}).json()
    assert back["prompt"] == "天\ufffd气"


def test_tokenizer_routes_take_no_admission_slot(client):
    """With every slot of the default model held (RNNLM_MAX_IN_FLIGHT=1 here), /score is refused
    at once, and /tokenize and /detokenize still answer: a flood of them cannot 503 /score."""
    app = client.app
    admission = app.state.admission  # type: ignore[attr-defined]
    with admission.slot("tiny-lstm", stream=False):
        refused = client.post("/score", json={"candidates": ["今天"]})
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "overloaded"
        assert client.post("/tokenize", json={"prompt": "今天"}).status_code == 200
        assert client.post("/detokenize", json={"tokens": [5, 6]}).status_code == 200
    assert admission.in_flight["tiny-lstm"] == 0
    for _ in range(3):  # and they hold none after answering
        client.post("/tokenize", json={"prompt": "今天"})
    assert client.post("/score", json={"candidates": ["今天"]}).status_code == 200
