"""POST /tag and the task heads served beside the models (RNNLM_HEAD_DIRS, service/heads.py): the
answer is the library's words, whitespace separates words, every bound a 4xx naming its field,
the tagger chosen by name (404 / 422 naming `model`), /models lists the heads, a broken head stops
the start, and the head's worker keeps its limits (deadline, queue, characters in flight)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from model.heads.tagger import Tagger, TaggerConfig, load_tagger, save_tagger, tag_spaced_texts, tag_texts
from model.text.tagged import parse_tagged_line, sentence_text, split_label
from model.text.tokenizer import Tokenizer
from model.training.tagger import label_set
from service.app import create_app
from service.errors import ApiError
from service.heads import HeadLimits, HeadRunner, load_head
from service.runner import ModelRegistry
from service.settings import Settings
from service.startup import StartupError, load_registry

from ..model.tagger_support import TAGGED_LINES

LIMITS = dict(max_text_chars=60, max_batch_texts=4, max_request_tokens=100)
SENTENCES = [parse_tagged_line(line) for line in TAGGED_LINES]
TEXTS = ["今天天气很好", "", "厨房里的油用完了", "新华社记者报道"]


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory) -> Path:
    """A tiny seeded tagger (random weights: its tags are valid, not good) as a checkpoint."""
    torch.manual_seed(0)
    tok = Tokenizer.build([sentence_text(s) for s in SENTENCES], kind="char")
    config = TaggerConfig(
        vocab_size=tok.vocab_size,
        labels=tuple(label_set(SENTENCES)),
        emb_dim=8,
        hidden_dim=8,
        num_layers=1,
        backward_emb_dim=8,
        backward_hidden_dim=8,
        backward_num_layers=1,
        dropout=0.0,
    )
    metrics = {"test": {"f1": 0.5}, "train_sentences": 10, "data": {"dir": "/srv/data/tiny-tagged"}}
    return save_tagger(tmp_path_factory.mktemp("heads") / "tiny-tagger", Tagger(config).eval(), tok, metrics)


@pytest.fixture(scope="module")
def client(tiny_model_dir, tagger_dir):
    settings = Settings(model_dirs=[str(tiny_model_dir)], head_dirs=[str(tagger_dir)], device="cpu", **LIMITS)
    with TestClient(create_app(settings)) as c:
        yield c


def error_of(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["status"] == status and err["field"] == field, err
    assert err["message"].startswith(f"`{field}`"), err
    return err


def words_of(result: dict) -> list[tuple[str, str, int, int]]:
    return [(w["word"], w["tag"], w["start"], w["end"]) for w in result["words"]]


def test_the_answer_is_the_librarys_words_with_tags_and_spans(client, tagger_dir):
    r = client.post("/tag", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["model"] == "tiny-tagger" and len(data["results"]) == len(TEXTS)  # the one tagger
    tagger, tok, _ = load_tagger(tagger_dir)
    want = tag_texts(tagger, tok, TEXTS)
    assert [words_of(res) for res in data["results"]] == [
        [(w.text, w.tag, w.start, w.end) for w in words] for words in want
    ]
    tags = {split_label(label)[1] for label in tagger.labels}
    for text, res in zip(TEXTS, data["results"], strict=True):
        assert "".join(w["word"] for w in res["words"]) == text  # the words cover the text, in order
        assert all(text[w["start"] : w["end"]] == w["word"] and w["tag"] in tags for w in res["words"])
    assert data["results"][1]["words"] == []  # an empty text has no words
    named = client.post("/tag", json={"texts": TEXTS, "model": "tiny-tagger"}).json()
    assert named == data


def test_whitespace_separates_words_and_belongs_to_none(client, tagger_dir):
    text = " 今天 天气\t很好\n 😀x "
    res = client.post("/tag", json={"texts": [text, " \t\n"]}).json()["results"]
    words = words_of(res[0])
    assert all(not any(c.isspace() for c in word) for word, *_ in words)
    assert all(text[start:end] == word for word, _, start, end in words)
    # the same as tagging each run on its own, shifted to where it stands in the text
    runs = [("今天", 1), ("天气", 4), ("很好", 7), ("😀x", 11)]
    tagger, tok, _ = load_tagger(tagger_dir)
    alone = tag_spaced_texts(tagger, tok, [run for run, _ in runs])
    assert words == [
        (w.text, w.tag, w.start + at, w.end + at) for (_, at), ws in zip(runs, alone, strict=True) for w in ws
    ]
    assert "".join(word for word, *_ in words) == "今天天气很好😀x"  # unknown characters are tagged too
    assert res[1]["words"] == []  # only whitespace: no words


def test_every_bound_is_a_4xx_naming_its_field(client):
    error_of(client.post("/tag", json={"texts": ["好"] * 5}), 413, "texts")  # RNNLM_MAX_BATCH_TEXTS
    error_of(client.post("/tag", json={"texts": ["好", "好" * 61]}), 413, "texts.1")  # RNNLM_MAX_TEXT_CHARS
    err = error_of(client.post("/tag", json={"texts": ["好" * 30] * 4}), 413, "texts")  # 120 characters
    assert "RNNLM_MAX_REQUEST_TOKENS" in err["message"] and "120" in err["message"]
    error_of(client.post("/tag", json={"texts": []}), 422, "texts")
    error_of(client.post("/tag", json={"texts": ["好", 3]}), 422, "texts.1")
    error_of(client.post("/tag", json={"text": "好"}), 422, "text")
    error_of(client.post("/tag", json={"texts": ["好"], "model": ""}), 422, "model")


def test_the_tagger_is_named_by_model(client):
    err = error_of(client.post("/tag", json={"texts": ["好"], "model": "nope"}), 404, "model")
    assert "tiny-tagger" in err["message"]
    err = error_of(client.post("/tag", json={"texts": ["好"], "model": "tiny-lstm"}), 422, "model")
    assert "language model" in err["message"]
    # and a head's name is no language model's
    error_of(client.post("/embed", json={"texts": ["好"], "model": "tiny-tagger"}), 404, "model")


def test_no_tagger_served_is_a_404_that_says_how_to_serve_one(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        err = error_of(c.post("/tag", json={"texts": ["好"]}), 404, "model")
        assert "RNNLM_HEAD_DIRS" in err["message"] and "rnnlm train-tagger" in err["message"]
        assert c.get("/models").json()["heads"] == []


def test_a_head_of_another_kind_is_a_422_naming_model(tiny_model_dir, tagger_dir):
    registry = ModelRegistry.load([tiny_model_dir], "cpu", [tagger_dir])
    tagger = registry.heads["tiny-tagger"]
    other = HeadRunner("sentiment", "classifier", tagger.net, tagger.tokenizer, {})
    registry = ModelRegistry(list(registry.runners.values()), [other, tagger])
    assert registry.head(None, "tagger") is tagger  # the first of its kind
    with pytest.raises(ApiError) as e:
        registry.head("sentiment", "tagger")
    assert e.value.status == 422 and e.value.field == "model" and "a classifier" in e.value.message


def test_models_lists_the_heads(client):
    data = client.get("/models").json()
    assert [m["name"] for m in data["models"]] == ["tiny-lstm"]
    (head,) = data["heads"]
    tags = sorted({tag for s in SENTENCES for _, tag in s})
    assert head["name"] == "tiny-tagger" and head["kind"] == "tagger" and head["classes"] == tags
    assert head["labels"] == len(label_set(SENTENCES)) and head["tokenizer"] == "char"
    assert head["architecture"]["head"] == "crf" and head["parameters"] > 0
    assert head["metrics"] == {"test": {"f1": 0.5}}
    assert head["training"] == {"train_sentences": 10, "corpus": "tiny-tagged"}  # no server path


def test_a_broken_or_wrong_head_stops_the_start_naming_it(tmp_path, tiny_model_dir, tagger_dir):
    broken = tmp_path / "broken-tagger"
    broken.mkdir()
    for f in tagger_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"x" * 10)
    settings = Settings(model_dirs=[str(tiny_model_dir)], head_dirs=[str(broken)], device="cpu")
    with pytest.raises(StartupError, match=r"broken-tagger/model\.safetensors"):
        load_registry(settings)
    settings = Settings(model_dirs=[str(tiny_model_dir)], head_dirs=[str(tiny_model_dir)], device="cpu")
    with pytest.raises(StartupError, match="not a task head"):
        load_registry(settings)
    model = ModelRegistry.load([tiny_model_dir], "cpu").get(None)
    head = load_head(tagger_dir, "cpu")
    head.name = model.name
    with pytest.raises(ValueError, match="share a name"):
        ModelRegistry([model], [head])


def test_the_settings_read_a_list_of_head_dirs(monkeypatch):
    monkeypatch.setenv("RNNLM_HEAD_DIRS", "weights/a, weights/b")
    assert Settings(model_dirs=["m"]).head_dirs == ["weights/a", "weights/b"]
    monkeypatch.delenv("RNNLM_HEAD_DIRS")
    assert Settings(model_dirs=["m"]).head_dirs == []


def test_the_openapi_schema_documents_tag_and_its_limits(client):
    spec = client.get("/openapi.json").json()
    assert "/tag" in spec["paths"]
    texts = spec["components"]["schemas"]["TagRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 4 and texts["items"]["maxLength"] == 60
    assert "Whitespace separates words" in texts["description"]


# -- the head's worker: its deadline, queue and characters in flight ------------------------------
def head_runner(tagger_dir: Path, **limits) -> HeadRunner:
    base = dict(max_request_chars=100, max_chars_in_flight=150, max_queue=2, timeout_s=None)
    head = load_head(tagger_dir, "cpu")
    asyncio.run(head.start(HeadLimits(**{**base, **limits})))
    return head


def test_the_worker_stops_a_job_past_its_deadline(tagger_dir):
    head = head_runner(tagger_dir, timeout_s=0.05)
    release, stopped = threading.Event(), threading.Event()

    def slow(should_stop):
        release.wait(5)
        if should_stop():
            stopped.set()
        return "late"

    async def go():
        with pytest.raises(ApiError) as e:
            await head.run(slow, 10, "texts")
        assert e.value.status == 504 and head.jobs == 0 and head.chars_in_flight == 0
        release.set()

    asyncio.run(go())
    assert stopped.wait(5)  # the job saw that nobody waits for it
    asyncio.run(head.stop())


def test_the_worker_refuses_past_its_queue_and_characters_in_flight(tagger_dir):
    head = head_runner(tagger_dir)
    release = threading.Event()

    async def go():
        first = asyncio.create_task(head.run(lambda _: release.wait(5), 80, "texts"))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as e:  # 80 + 80 > 150 characters in flight
            await head.run(lambda _: 1, 80, "texts")
        assert e.value.status == 503 and e.value.type == "overloaded"
        second = asyncio.create_task(head.run(lambda _: 2, 10, "texts"))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as e:  # two requests already admitted (max_queue 2)
            await head.run(lambda _: 3, 1, "texts")
        assert e.value.status == 503 and "RNNLM_ENGINE_QUEUE" in e.value.message
        release.set()
        assert await first is True and await second == 2
        await head.stop()
        with pytest.raises(ApiError) as e:
            await head.run(lambda _: 4, 1, "texts")
        assert e.value.status == 503 and e.value.type == "shutting_down"

    asyncio.run(go())
