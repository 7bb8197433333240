"""An adapted model (a sentence mixture of the base and a domain model) serves every route."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from model.training.adapt import AdaptJob, adapt
from service.app import create_app
from service.settings import Settings

DOMAIN = [
    f"第{i}号商品的质量很好，物流也很快。" if i % 2 else f"这家酒店第{i}层的房间很干净。" for i in range(40)
]


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("adapted")
    text = root / "domain.txt"
    text.write_text("\n".join(DOMAIN) + "\n", encoding="utf-8")
    budget = {"max_minutes": 0.0, "max_tokens": 600, "eval_every_tokens": 300, "batch_size": 4, "bptt": 8}
    job = AdaptJob(
        base=str(tiny_model_dir),
        texts=[str(text)],
        out_dir=str(root / "mine"),
        device="cpu",
        fit_overrides=budget,
    )
    adapt(job, log=lambda _: None)
    settings = Settings(model_dirs=[str(root / "mine"), str(tiny_model_dir)], device="cpu", sse_ping_s=0)
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_adapted_model_scores_continues_and_generates(client) -> None:
    models = client.get("/models").json()
    assert any(m["name"] == "mine" for m in models["models"]) if "models" in models else "mine" in str(models)
    scored = client.post(
        "/score", json={"model": "mine", "candidates": ["这家酒店的房间很干净。", "房间这家的酒店很干净。"]}
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["ranking"][0] == 0
    nxt = client.post("/next-token", json={"model": "mine", "text": "这家酒店", "top_k": 3})
    assert nxt.status_code == 200, nxt.text
    gen = client.post("/generate", json={"model": "mine", "prompt": "这家", "max_new_tokens": 8, "seed": 1})
    assert gen.status_code == 200, gen.text
    again = client.post("/generate", json={"model": "mine", "prompt": "这家", "max_new_tokens": 8, "seed": 1})
    assert again.json()["text"] == gen.json()["text"]
    stream = client.post(
        "/generate", json={"model": "mine", "prompt": "这家", "max_new_tokens": 8, "seed": 1, "stream": True}
    )
    assert stream.status_code == 200 and "data:" in stream.text
