"""The prefix-state cache behind the HTTP API: typing one character at a time over /next-token and
re-scoring a list's context over /score give what a service without the cache gives (within 1e-5:
see tests/model/test_state_cache.py for why not bit for bit), and /metrics counts its hits,
misses, bytes and entries."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

TOL = 1e-5
TEXT = "厨房里食油用完了"


def metric_samples(client: TestClient) -> dict[str, float]:
    samples = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.fixture(scope="module")
def clients(tiny_model_dir, tmp_path_factory):
    static = tmp_path_factory.mktemp("static")
    (static / "index.html").write_text("<!doctype html><title>rnnlm</title>", encoding="utf-8")

    def settings(cache_bytes: int) -> Settings:
        return Settings(model_dirs=[str(tiny_model_dir)], device="cpu", prefix_cache_bytes=cache_bytes)

    with (
        TestClient(create_app(settings(1 << 20), static_dir=static)) as cached,
        TestClient(create_app(settings(0), static_dir=static)) as plain,
    ):
        yield cached, plain


def test_typing_over_http_equals_the_service_without_cache(clients):
    cached, plain = clients
    for n in range(len(TEXT) + 1):
        body = {"text": TEXT[:n], "top_k": 8}
        got = cached.post("/next-token", json=body)
        want = plain.post("/next-token", json=body)
        assert got.status_code == want.status_code == 200
        got_next, want_next = got.json()["next"], want.json()["next"]
        assert [t["id"] for t in got_next] == [t["id"] for t in want_next]
        assert [t["logprob"] for t in got_next] == pytest.approx([t["logprob"] for t in want_next], abs=TOL)
    samples = metric_samples(cached)
    assert samples["rnnlm_prefix_cache_hits_total"] >= len(TEXT)  # every keystroke after the first
    assert samples["rnnlm_prefix_cache_misses_total"] >= 1
    assert samples["rnnlm_prefix_cache_entries"] >= len(TEXT) + 1
    assert 0 < samples["rnnlm_prefix_cache_bytes"] <= 1 << 20
    # one position per keystroke: the model ran far fewer positions than the prefixes hold
    requested = samples["rnnlm_positions_requested_total"]
    assert samples["rnnlm_positions_computed_total"] < requested / 2
    off = metric_samples(plain)
    assert off.get("rnnlm_prefix_cache_hits_total", 0) == 0 and off.get("rnnlm_prefix_cache_bytes", 0) == 0


def test_score_reuses_a_context_and_equals_the_service_without_cache(clients):
    cached, plain = clients
    before = metric_samples(cached)
    for ending in ("我们去买", "我们去超市"):  # the second list's context is the first's
        body = {"candidates": [TEXT + ending, TEXT + ending[::-1]], "per_token": True}
        got, want = cached.post("/score", json=body).json(), plain.post("/score", json=body).json()
        for g, w in zip(got["results"], want["results"], strict=True):
            assert g["text"] == w["text"]
            assert g["logprob"] == pytest.approx(w["logprob"], abs=TOL * len(g["token_logprobs"]))
            g_lps = [t["logprob"] for t in g["token_logprobs"]]
            assert g_lps == pytest.approx([t["logprob"] for t in w["token_logprobs"]], abs=TOL)
    after = metric_samples(cached)
    assert after["rnnlm_prefix_cache_hits_total"] - before["rnnlm_prefix_cache_hits_total"] >= 2
    assert after["rnnlm_prefix_cache_bytes"] <= 1 << 20


def test_the_setting_is_validated():
    with pytest.raises(ValueError, match="prefix_cache_bytes"):
        Settings(model_dirs=["x"], prefix_cache_bytes=-1)
