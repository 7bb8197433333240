"""/next-token's Server-Timing header: every stage is there, in order, and they add up to the total;
small answers (built on the event loop) and large ones (built in worker threads) are the same."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from model.inference.engine.text import INLINE_CHARS, INLINE_ENTRIES
from model.inference.scoring import next_token_distribution
from model.models.loading import load_model
from service.app import create_app
from service.routes.next_token import server_timing
from service.settings import Settings

STAGES = ["validation", "tokenize", "queue", "model", "topk", "handoff", "describe", "serialize", "total"]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        yield c


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


def stages_of(header: str) -> dict[str, float]:
    out = {}
    for entry in header.split(","):
        name, dur = entry.strip().split(";")
        assert dur.startswith("dur=")
        out[name] = float(dur.removeprefix("dur="))
    return out


def test_server_timing_has_every_stage_and_they_add_up(client) -> None:
    for text in ["今天天气很好，我们一起去公园散步吧", "", "厨房"]:
        r = client.post("/next-token", json={"text": text, "top_k": 5})
        assert r.status_code == 200, r.text
        stages = stages_of(r.headers["server-timing"])
        assert list(stages) == STAGES
        assert all(v >= 0 for v in stages.values())
        assert stages["model"] > 0 and stages["total"] > 0
        parts = sum(v for k, v in stages.items() if k != "total")
        # the stages are consecutive: only the few statements between two of them are not counted
        assert parts <= stages["total"] + 0.01
        assert stages["total"] - parts < 2.0 + 0.1 * stages["total"]


def test_server_timing_header_format() -> None:
    assert server_timing({"model": 0.0012345, "total": 0.002}) == "model;dur=1.234, total;dur=2.000"


def test_small_and_large_answers_are_the_same_as_the_library(client, lm) -> None:
    small = ["今天天气", "你先走"]
    large = [f"今天天气很好{i}" for i in range(INLINE_ENTRIES // 10 + 1)]  # × top_k 10 > INLINE_ENTRIES
    long_text = "今天天气很好" * (INLINE_CHARS // 6 + 1)  # tokenized in a worker thread
    for texts, top_k in [(small, 10), (large, 10), ([long_text], 3)]:
        r = client.post("/next-token", json={"text": texts, "top_k": top_k})
        assert r.status_code == 200, r.text
        want = next_token_distribution(lm, texts, top_k)
        got = r.json()["results"]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert [t["id"] for t in g["next"]] == [t.id for t in w.next]
            assert g["tokens"] == w.tokens
            assert g["entropy"] == pytest.approx(w.entropy, abs=1e-4)
