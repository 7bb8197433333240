"""Mixtures: λ·P_a + (1-λ)·P_b of an RNN and an n-gram is itself a LanguageModel."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from model.models.checkpoint import CheckpointError
from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.models.mixture import MixtureLanguageModel, mixture_loglik, tune_lambda
from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer
from rnnlm.cli import main
from tests.conftest import TINY_LINES


@pytest.fixture(scope="module")
def ngram_dir(tmp_path_factory, tiny_model_dir):
    """A KN 3-gram over the tiny RNN's own vocabulary (a mixture needs one vocabulary)."""
    tokenizer = Tokenizer.load(tiny_model_dir / "tokenizer.json")
    lm = build_ngram(tokenizer, TINY_LINES[:10], 3, "kn")
    return save_ngram(tmp_path_factory.mktemp("models") / "kn3", lm)


@pytest.fixture(scope="module")
def mixture(tiny_model_dir, ngram_dir) -> MixtureLanguageModel:
    return MixtureLanguageModel(load_model(tiny_model_dir), load_model(ngram_dir), 0.3)


SEQS = [with_boundaries(ids) for ids in ([5, 6, 7], [UNK_ID, 9, 10, 11, 12], [])]


def test_mixture_is_the_weighted_sum_of_probabilities(mixture):
    scores = mixture.sequence_logprobs(SEQS)
    a, b = mixture.a.sequence_logprobs(SEQS), mixture.b.sequence_logprobs(SEQS)
    for s, la, lb in zip(scores, a, b, strict=True):
        expected = torch.log(0.3 * la.exp() + 0.7 * lb.exp())
        assert torch.allclose(s, expected, atol=1e-9)


def test_mixture_steps_like_it_scores_and_sums_to_one(mixture):
    scores = mixture.sequence_logprobs(SEQS)
    for seq, score in zip(SEQS, scores, strict=True):
        state = mixture.start_state(1)
        for i in range(len(seq) - 1):
            logp, state = mixture.step(state, torch.tensor([seq[i]]))
            assert float(logp[0].double().exp().sum()) == pytest.approx(1.0, abs=1e-5)
            assert float(logp[0, seq[i + 1]]) == pytest.approx(float(score[i]), abs=1e-4)
    logp, state = mixture.prefill([[BOS_ID, 5, 6], [BOS_ID]])
    joined = mixture.concat_states([mixture.select_state(state, [1]), mixture.select_state(state, [0])])
    step, _ = mixture.step(joined, torch.tensor([5, 7]))
    assert torch.allclose(step, mixture.next_token_logprobs([[BOS_ID, 5], [BOS_ID, 5, 6, 7]]), atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_extreme_lambdas_are_one_model(tiny_model_dir, ngram_dir, lam):
    a, b = load_model(tiny_model_dir), load_model(ngram_dir)
    mixed = MixtureLanguageModel(a, b, lam).sequence_logprobs(SEQS)
    alone = (a if lam == 1.0 else b).sequence_logprobs(SEQS)
    for m, s in zip(mixed, alone, strict=True):
        assert torch.allclose(m, s.double(), atol=1e-9)


def test_tune_lambda_finds_the_maximum():
    rng = np.random.default_rng(0)
    logp_a = np.log(rng.uniform(0.01, 1.0, 500))
    logp_b = np.log(rng.uniform(0.01, 1.0, 500))
    grid = np.linspace(0, 1, 2001)
    best = grid[np.argmax([mixture_loglik(lam, logp_a, logp_b) for lam in grid])]
    assert tune_lambda(logp_a, logp_b) == pytest.approx(best, abs=1e-3)
    assert tune_lambda(np.zeros(10), np.full(10, -5.0)) == 1.0  # a is better on every token


def test_models_with_different_vocabularies_do_not_mix(tiny_model_dir):
    other = build_ngram(Tokenizer.build(["完全不同的句子"]), ["完全不同的句子"], 2)
    with pytest.raises(ValueError, match="vocabulary"):
        MixtureLanguageModel(load_model(tiny_model_dir), other, 0.5)


def test_cli_mix_tunes_saves_and_loads(tmp_path, tiny_model_dir, ngram_dir, tiny_corpus, capsys):
    out = tmp_path / "mix"
    args = ["mix", str(tiny_model_dir), str(ngram_dir), "--data", str(tiny_corpus), "--out", str(out)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mixture" and not config["components"][0].startswith("/")
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= printed["lambda"] <= 1.0
    # tuned on valid: never worse there than either component alone
    assert metrics["valid"]["perplexity"] <= min(metrics["components_valid"]) * (1 + 1e-6)
    lm = load_model(out)
    assert isinstance(lm, MixtureLanguageModel) and lm.lam == pytest.approx(printed["lambda"])
    lines = (tiny_corpus / "test.txt").read_text(encoding="utf-8").split()
    assert evaluate_lines(lm, lines)["perplexity"] == pytest.approx(metrics["test"]["perplexity"], rel=1e-6)
    assert lm.describe()["kind"] == "mixture" and math.isfinite(lm.describe()["lambda"])


def test_changed_component_is_refused(tmp_path, tiny_model_dir, ngram_dir, tiny_corpus):
    ngram_copy = tmp_path / "kn3"
    shutil.copytree(ngram_dir, ngram_copy)
    out = tmp_path / "mix"
    assert (
        main(
            [
                "mix",
                str(tiny_model_dir),
                str(ngram_copy),
                "--data",
                str(tiny_corpus),
                "--out",
                str(out),
                "--lambda",
                "0.5",
            ]
        )
        == 0
    )
    assert load_model(out).lam == 0.5
    config = json.loads((ngram_copy / "config.json").read_text())
    config["smoothing"] = "something else"
    (ngram_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="changed since"):
        load_model(out)
    assert (
        main(
            [
                "mix",
                str(tiny_model_dir),
                str(ngram_copy),
                "--data",
                str(tiny_corpus),
                "--out",
                str(out),
                "--lambda",
                "1.5",
            ]
        )
        == 2
    )


def test_eos_and_unk_have_probability(mixture):
    logp = mixture.next_token_logprobs([[BOS_ID, 5]]).double()
    assert torch.isfinite(logp[0, [EOS_ID, UNK_ID]]).all()


@pytest.fixture(scope="module")
def sentence_mixture(tiny_model_dir, ngram_dir) -> MixtureLanguageModel:
    return MixtureLanguageModel(load_model(tiny_model_dir), load_model(ngram_dir), 0.3, mode="sentence")


def test_a_sentence_mixture_gives_each_sentence_the_mixed_sentence_probability(sentence_mixture):
    m = sentence_mixture
    a, b = m.a.sequence_logprobs(SEQS), m.b.sequence_logprobs(SEQS)
    for s, la, lb in zip(m.sequence_logprobs(SEQS), a, b, strict=True):
        expected = math.log(
            0.3 * math.exp(float(la.double().sum())) + 0.7 * math.exp(float(lb.double().sum()))
        )
        assert float(s.sum()) == pytest.approx(expected, abs=1e-9)
        # per token it is not the token mixture (the weights follow the sentence)
    token = MixtureLanguageModel(m.a, m.b, 0.3)
    assert not torch.allclose(m.sequence_logprobs(SEQS)[1], token.sequence_logprobs(SEQS)[1])


def test_a_sentence_mixture_steps_prefills_and_regroups_like_it_scores(sentence_mixture):
    m = sentence_mixture
    scores = m.sequence_logprobs(SEQS)
    for seq, score in zip(SEQS, scores, strict=True):
        state = m.start_state(1)
        for i in range(len(seq) - 1):
            logp, state = m.step(state, torch.tensor([seq[i]]))
            assert float(logp[0].double().exp().sum()) == pytest.approx(1.0, abs=1e-5)
            assert float(logp[0, seq[i + 1]]) == pytest.approx(float(score[i]), abs=1e-4)
    logp, state = m.prefill([[BOS_ID, 5, 6], [BOS_ID]])
    assert torch.allclose(logp[0].double(), m.next_token_logprobs([[BOS_ID, 5, 6]])[0].double(), atol=1e-5)
    joined = m.concat_states([m.select_state(state, [1]), m.select_state(state, [0])])
    step, _ = m.step(joined, torch.tensor([5, 7]))
    assert torch.allclose(step, m.next_token_logprobs([[BOS_ID, 5], [BOS_ID, 5, 6, 7]]), atol=1e-5)


def test_a_sentence_mixture_saves_its_mode(sentence_mixture, tiny_model_dir, ngram_dir, tmp_path):
    from model.models.mixture import save_mixture

    save_mixture(tmp_path / "mix", [tiny_model_dir, ngram_dir], sentence_mixture)
    loaded = load_model(tmp_path / "mix")
    assert loaded.mode == "sentence" and loaded.describe()["mode"] == "sentence"
    seqs = SEQS[:2]
    for x, y in zip(loaded.sequence_logprobs(seqs), sentence_mixture.sequence_logprobs(seqs), strict=True):
        assert torch.allclose(x, y)
    with pytest.raises(ValueError, match="mode"):
        MixtureLanguageModel(sentence_mixture.a, sentence_mixture.b, 0.5, mode="word")
