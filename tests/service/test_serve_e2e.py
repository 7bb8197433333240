"""End to end: ``rnnlm serve`` as a real process on a free port with the shipped model, every
endpoint called over HTTP with httpx."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .reliability_support import wait_ready

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / "pd98-char-lstm"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RNNLM_MAX_CANDIDATES": "50"}
    cmd = [
        str(Path(sys.executable).parent / "rnnlm"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-dir",
        str(SHIPPED),
    ]
    with log.open("w") as out:  # a file, not a pipe: a full pipe nobody reads would block the server
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (SHIPPED / "config.json").exists():
        pytest.skip(f"the shipped model is missing: {SHIPPED.relative_to(REPO)} (a training run writes it)")
    log = tmp_path_factory.mktemp("serve") / "server.log"
    for _attempt in range(3):  # a checkpoint being replaced by a running training can fail to load once
        port = free_port()
        proc = start_server(port, log)
        base = f"http://127.0.0.1:{port}"
        if wait_ready(proc, base, START_TIMEOUT_S):
            break
        proc.kill()
        proc.wait(timeout=10)
        time.sleep(1)
    else:
        pytest.fail(f"rnnlm serve did not become ready:\n{log.read_text()[-3000:]}")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_endpoint_over_http(server):
    assert server.get("/health").json() == {"status": "ok"}
    assert server.get("/ready").json()["models"] == ["pd98-char-lstm"]

    [model] = server.get("/models").json()["models"]
    assert model["name"] == "pd98-char-lstm" and model["tokenizer"] == "char"
    assert model["vocab_size"] > 1000 and model["parameters"] > 1_000_000
    assert "valid" in model["metrics"] and model["metrics"]["valid"]["perplexity"] > 1

    nxt = server.post("/next-token", json={"text": "中华人民共和", "top_k": 5}).json()
    assert len(nxt["next"]) == 5 and nxt["tokens"] == list("中华人民共和")
    assert nxt["next"][0]["prob"] >= nxt["next"][-1]["prob"] and nxt["entropy"] > 0

    cands = ["厨房里食油用完了", "厨房里石油用完了", "你先走", "你走先", "", "😀 mixed 文字"]
    scored = server.post(
        "/score", json={"candidates": cands, "per_token": True, "external_scores": [0, 0, 0, 0, 0, 1.5]}
    ).json()
    assert sorted(scored["ranking"]) == list(range(len(cands)))
    for cand, r in zip(cands, scored["results"], strict=True):
        assert r["num_tokens"] == len(cand) + 1 == len(r["token_logprobs"])
        assert r["logprob"] == pytest.approx(sum(t["logprob"] for t in r["token_logprobs"]), abs=1e-6)

    request = {"prompt": "今天", "max_new_tokens": 12, "seed": 2024, "return_logprobs": True}
    first = server.post("/generate", json=request).json()
    assert first == server.post("/generate", json=request).json()  # same seed, same output
    assert first["seed"] == 2024 and first["finish_reason"] in ("length", "eos", "stop")

    with server.stream("POST", "/generate", json={**request, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip() and not b.startswith(":")]
    events = [
        (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
        for b in blocks
    ]
    assert [e for e, _ in events] == ["token"] * first["num_tokens"] + ["done"]
    assert events[-1][1] == first
    assert "".join(d["text"] for e, d in events if e == "token") == first["text"]

    error = server.post("/score", json={"candidates": ["a"] * 51})
    assert error.status_code == 413 and error.json()["error"]["field"] == "candidates"
    assert server.get("/missing").json()["error"]["status"] == 404

    metrics = server.get("/metrics").text
    assert 'rnnlm_requests_total{endpoint="/score",method="POST",status="200"}' in metrics
    assert "rnnlm_tokens_generated_total" in metrics
    assert server.get("/docs").status_code == 200
    playground = (REPO / "service" / "static" / "index.html").exists()
    assert server.get("/").status_code == (200 if playground else 404)
    assert "/score" in server.get("/openapi.json").json()["paths"]
