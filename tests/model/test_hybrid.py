"""The hybrid (RNN residual over a KN n-gram), the fixed-window model, and the torch n-gram tables
they are trained with: exact scoring, one distribution, checkpoints that verify."""

from __future__ import annotations

import json
import math

import pytest
import torch

from model.models.checkpoint import CheckpointError
from model.models.config import ModelConfig
from model.models.hybrid import HybridLanguageModel, HybridNet, load_hybrid, save_hybrid
from model.models.loading import load_model
from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.models.window import WindowConfig, WindowLanguageModel, WindowNet
from model.text.batching import with_boundaries
from model.text.tokenizer import PAD_ID, Tokenizer

from ..conftest import TINY_LINES

SENTENCES = ["厨房里食油用完了", "你先走吧", "今天天气很好", "新华社记者报道了中国人民银行的消息"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.build(TINY_LINES, kind="char")


@pytest.fixture(scope="module")
def kn3(tok):
    return build_ngram(tok, TINY_LINES, order=3)


def seqs(tok, lines=SENTENCES):
    return [with_boundaries(tok.encode(s).ids) for s in lines]


def hybrid_net(tok, seed=0) -> HybridNet:
    torch.manual_seed(seed)
    net = HybridNet(ModelConfig(vocab_size=tok.vocab_size, emb_dim=16, hidden_dim=16, dropout=0.0))
    with torch.no_grad():  # a nonzero gate so that β(h) depends on the context
        net.beta.weight.normal_(0, 0.3)
    return net.eval()


# -- torch tables ---------------------------------------------------------------------------------
def test_histories_are_cut_at_sentence_starts():
    stream = torch.tensor([2, 5, 6, 7, 2, 8])  # <bos> a b c <bos> d
    position = torch.tensor([0, 1, 2, 3, 0, 1])
    h = histories_of(stream, position, 3)
    assert h.tolist() == [[0, 0, 2], [0, 2, 5], [2, 5, 6], [5, 6, 7], [0, 0, 2], [0, 2, 8]]


def test_torch_tables_equal_the_numpy_tables(tok, kn3):
    ids = [i for s in seqs(tok) for i in s[:-1]]
    position = [p for s in seqs(tok) for p in range(len(s) - 1)]
    hist = histories_of(torch.tensor(ids), torch.tensor(position), 2)
    ours = TorchBackoffTables(kn3.tables).next_logprobs(hist)
    ref = torch.from_numpy(kn3.tables.next_logprobs(hist.numpy())).float()
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(ours))
    assert torch.allclose(ours[finite], ref[finite], atol=1e-5)


def test_stacked_tables_look_each_row_up_in_its_own_table(tok, kn3):
    other = build_ngram(tok, TINY_LINES[::2], order=3)
    stacked = TorchBackoffTables([kn3.tables, other.tables])
    hist = histories_of(torch.tensor(seqs(tok)[3][:-1]), torch.arange(len(seqs(tok)[3]) - 1), 2)
    group = torch.arange(len(hist)) % 2
    out = stacked.next_logprobs(hist, group)
    for g, lm in enumerate((kn3, other)):
        ref = torch.from_numpy(lm.tables.next_logprobs(hist[group == g].numpy())).float()
        finite = torch.isfinite(ref)
        assert torch.allclose(out[group == g][finite], ref[finite], atol=1e-5)


# -- the hybrid -----------------------------------------------------------------------------------
def test_hybrid_with_a_silent_rnn_is_exactly_the_ngram(tok, kn3):
    net = HybridNet(ModelConfig(vocab_size=tok.vocab_size, emb_dim=16, hidden_dim=16, dropout=0.0)).eval()
    with torch.no_grad():  # RNN logits 0 everywhere, β = softplus(b) = 1: softmax(ln P_ngram) = P_ngram
        net.rnn.embedding.weight.zero_()
        net.rnn.decoder.bias.zero_()
    lm = HybridLanguageModel(net, kn3, tok)
    for ours, ref in zip(lm.sequence_logprobs(seqs(tok)), kn3.sequence_logprobs(seqs(tok)), strict=True):
        assert torch.allclose(ours, ref, atol=1e-5)


def test_hybrid_scores_equal_its_step_by_step_distribution(tok, kn3):
    lm = HybridLanguageModel(hybrid_net(tok), kn3, tok)
    for s, scored in zip(seqs(tok), lm.sequence_logprobs(seqs(tok)), strict=True):
        state = lm.start_state(1)
        for t in range(1, len(s)):
            logp, state = lm.step(state, torch.tensor([s[t - 1]]))
            assert math.isclose(float(torch.logsumexp(logp[0].double(), 0)), 0.0, abs_tol=1e-5)
            assert math.isclose(float(logp[0, s[t]]), float(scored[t - 1]), abs_tol=1e-4)
        assert float(logp[0, PAD_ID]) == -math.inf


def test_hybrid_prefill_matches_stepping(tok, kn3):
    lm = HybridLanguageModel(hybrid_net(tok), kn3, tok)
    prefixes = [s[:-2] for s in seqs(tok)]
    logp, _ = lm.prefill(prefixes)
    for row, p in enumerate(prefixes):
        state = lm.start_state(1)
        for t in p:
            step_logp, state = lm.step(state, torch.tensor([t]))
        assert torch.allclose(logp[row], step_logp[0], atol=1e-4)


def test_hybrid_checkpoint_round_trip_and_refuses_a_changed_ngram(tok, kn3, tmp_path):
    save_ngram(tmp_path / "kn3", kn3, {"note": "fixture"})
    net = hybrid_net(tok)
    save_hybrid(
        tmp_path / "hyb", net, tok, tmp_path / "kn3", {"test": {"perplexity": 1.0}}, dtype=torch.float16
    )
    loaded = load_model(tmp_path / "hyb")
    assert loaded.kind == "hybrid" and loaded.describe()["components"]["ngram"].startswith("order 3")
    assert json.loads((tmp_path / "hyb" / "config.json").read_text())["ngram"]["path"] == "../kn3"
    expected = HybridLanguageModel(net.half().float(), kn3, tok).sequence_logprobs(seqs(tok))
    for a, b in zip(loaded.sequence_logprobs(seqs(tok)), expected, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    save_ngram(tmp_path / "kn3", build_ngram(tok, TINY_LINES[:10], order=3))  # a different n-gram
    with pytest.raises(CheckpointError, match="changed since the hybrid"):
        load_hybrid(tmp_path / "hyb")


# -- the window model -----------------------------------------------------------------------------
def test_window_model_scores_equal_stepping_and_survive_a_round_trip(tok, tmp_path):
    from model.models.checkpoint import save_network

    torch.manual_seed(0)
    net = WindowNet(WindowConfig(vocab_size=tok.vocab_size, context=3, emb_dim=8, hidden_dim=16, dropout=0.0))
    lm = WindowLanguageModel(net, tok)
    for s, scored in zip(seqs(tok), lm.sequence_logprobs(seqs(tok)), strict=True):
        state = lm.start_state(1)
        for t in range(1, len(s)):
            logp, state = lm.step(state, torch.tensor([s[t - 1]]))
            assert math.isclose(float(logp[0, s[t]]), float(scored[t - 1]), abs_tol=1e-5)
    save_network(tmp_path / "win", net, net.config, tok, model_type="window")
    again = load_model(tmp_path / "win")
    assert again.kind == "window"
    for a, b in zip(again.sequence_logprobs(seqs(tok)), lm.sequence_logprobs(seqs(tok)), strict=True):
        assert torch.allclose(a, b)


# -- served -----------------------------------------------------------------------------------------
def test_the_service_serves_a_hybrid_exactly(tok, kn3, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    save_ngram(tmp_path / "kn3", kn3)
    save_hybrid(tmp_path / "hyb", hybrid_net(tok), tok, tmp_path / "kn3", {"test": {"perplexity": 9.0}})
    lm = load_model(tmp_path / "hyb")
    settings = Settings(model_dirs=[str(tmp_path / "hyb"), str(tmp_path / "kn3")], device="cpu")
    with TestClient(create_app(settings)) as client:
        [hyb, ngram] = client.get("/models").json()["models"]
        assert hyb["default"] and hyb["kind"] == "hybrid" and set(hyb["components"]) == {"rnn", "ngram"}
        assert ngram["kind"] == "ngram" and not ngram["default"]
        scored = client.post("/score", json={"candidates": SENTENCES}).json()["results"]
        want = [float(x.sum()) for x in lm.sequence_logprobs(seqs(tok))]
        assert [r["logprob"] for r in scored] == pytest.approx(want, abs=1e-4)
        nxt = client.post("/next-token", json={"text": "厨房", "top_k": 3}).json()
        assert len(nxt["next"]) == 3 and nxt["next"][0]["prob"] >= nxt["next"][-1]["prob"]
        gen = client.post("/generate", json={"prompt": "今天", "max_new_tokens": 5, "seed": 1}).json()
        assert gen["model"] == "hyb" and 1 <= gen["num_tokens"] <= 5 and gen["prompt_tokens"] == 2
        again = client.post("/generate", json={"prompt": "今天", "max_new_tokens": 5, "seed": 1}).json()
        assert again["text"] == gen["text"]  # seeded: the same sample
