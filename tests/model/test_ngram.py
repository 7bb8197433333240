"""N-gram models: counting, the four smoothing methods, the LanguageModel interface, checkpoints."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from model.models.checkpoint import CheckpointError
from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.models.ngram.counts import count_ngrams
from model.models.ngram.model import NGramLanguageModel, build_ngram, from_sequences
from model.models.ngram.smoothing import SMOOTHERS, katz_discounted_counts, kn_adjusted_counts, kn_discounts
from model.models.ngram.store import TABLES, save_ngram
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from rnnlm.cli import main
from tests.conftest import TINY_LINES

FIXTURES = Path(__file__).parent / "fixtures" / "lmplz"
SMOOTHINGS = sorted(SMOOTHERS)


@pytest.fixture(scope="module")
def zipf_lines() -> list[str]:
    """150 synthetic sentences with a long tail: every count-of-count the estimators need is > 0."""
    return (FIXTURES / "corpus.txt").read_text(encoding="utf-8").split()


@pytest.fixture(scope="module")
def zipf_tokenizer(zipf_lines) -> Tokenizer:
    return Tokenizer.build(zipf_lines[:120], kind="char")


def contexts(tok: Tokenizer, lines: list[str]) -> list[list[int]]:
    """Seen prefixes, unseen ones, and ones with <unk> in them (all starting with <bos>)."""
    seen = [with_boundaries(tok.encode(line).ids, eos=False) for line in lines[:4]]
    prefixes = [[BOS_ID]] + [s[:k] for s in seen for k in range(2, len(s) + 1)]
    rng = random.Random(0)
    unseen = [[BOS_ID, *rng.choices(range(4, tok.vocab_size), k=k)] for k in (1, 3, 6)]
    with_unk = [[BOS_ID, UNK_ID], [BOS_ID, 5, UNK_ID, UNK_ID], [BOS_ID, UNK_ID, 6, 7]]
    return prefixes + unseen + with_unk


# -- counting ---------------------------------------------------------------------------------------
def brute_force_counts(seqs: list[list[int]], order: int) -> Counter:
    counts: Counter = Counter()
    for s in seqs:
        for end in range(1, len(s)):
            for n in range(1, order + 1):
                if end - n + 1 >= 0:
                    counts[tuple(s[end - n + 1 : end + 1])] += 1
    return counts


def test_counts_equal_brute_force(zipf_lines, zipf_tokenizer):
    seqs = [with_boundaries(zipf_tokenizer.encode(line).ids) for line in zipf_lines[:60]]
    counts = count_ngrams(seqs, 4, zipf_tokenizer.vocab_size)
    lm = from_sequences(zipf_tokenizer, seqs, 4, "kn")
    expected = brute_force_counts(seqs, 4)
    got = Counter()
    for n in range(1, 5):
        for ids, c in zip(lm.tables.ngram_tokens(n).tolist(), counts[n].counts.tolist(), strict=True):
            if c:
                got[tuple(ids)] = c
    assert got == expected
    assert not any(BOS_ID in key[1:] for key in got)  # <bos> is context only


def test_kn_adjusted_counts_are_continuation_counts():
    # a b | c b | a b b: "b" follows a, c, b (3 kinds); "<bos> a" starts a sentence (raw count)
    tok = Tokenizer(kind="char", tokens=["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c"])
    seqs = [with_boundaries(tok.encode(s).ids) for s in ("ab", "cb", "abb")]
    counts = count_ngrams(seqs, 3, tok.vocab_size)
    adjusted = kn_adjusted_counts(counts)
    a, b, eos = 4, 5, EOS_ID
    assert adjusted[0][b] == 3  # N1+(• b): a, c, b
    assert adjusted[0][eos] == 1  # only b precedes </s>
    assert adjusted[0][BOS_ID] == 0
    table = from_sequences(tok, seqs, 3).tables.ngram_tokens(2).tolist()
    bigrams = {tuple(t): i for i, t in enumerate(table)}
    assert adjusted[1][bigrams[(BOS_ID, a)]] == 2  # begins with <bos>: the raw count
    assert adjusted[1][bigrams[(a, b)]] == 1  # only <bos> precedes "a b"


def test_kn_discounts_follow_chen_goodman():
    # t1..t4 = 8, 4, 2, 1 -> Y = 8 / 16 = 0.5, D_k = k - (k+1) Y t_{k+1} / t_k
    adjusted = np.array([1] * 8 + [2] * 4 + [3] * 2 + [4] + [9, 0], dtype=float)
    d, fallback = kn_discounts(adjusted)
    assert not fallback
    assert d.tolist() == pytest.approx([0.0, 1 - 2 * 0.5 * 4 / 8, 2 - 3 * 0.5 * 2 / 4, 3 - 4 * 0.5 * 1 / 2])
    assert kn_discounts(np.array([1.0, 1.0, 5.0]))[1]  # no 2s, 3s: lmplz's fallback


def test_katz_good_turing_discounts():
    counts = np.repeat(np.arange(1, 8), [100, 40, 25, 15, 10, 6, 4])
    star, method = katz_discounted_counts(counts, max_count=5)
    assert method == "good-turing"
    n = {r: int(np.sum(counts == r)) for r in range(1, 8)}
    common = 6 * n[6] / n[1]
    d2 = (3 * n[3] / (2 * n[2]) - common) / (1 - common)
    assert star[counts == 2][0] == pytest.approx(2 * d2)
    assert np.all(star[counts > 5] == counts[counts > 5])  # large counts are trusted
    _, fallback = katz_discounted_counts(np.array([3, 3, 6]))
    assert fallback.startswith("absolute")


# -- every distribution is a distribution ---------------------------------------------------------
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_distributions_sum_to_one(zipf_lines, zipf_tokenizer, smoothing, order):
    lm = build_ngram(zipf_tokenizer, zipf_lines[:120], order, smoothing)
    prefixes = contexts(zipf_tokenizer, zipf_lines)
    logp = lm.next_token_logprobs(prefixes).double()  # (B, V)
    probs = logp.exp()
    assert probs.sum(dim=1).numpy() == pytest.approx(np.ones(len(prefixes)), abs=2e-6)
    assert torch.all(probs[:, [PAD_ID, BOS_ID]] == 0)
    assert torch.all(probs[:, [UNK_ID, EOS_ID]] > 0)  # ordinary outcomes, never impossible
    assert torch.all(probs[:, 4:] > 0)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_distributions_sum_to_one_on_degenerate_counts(smoothing):
    """TINY_LINES repeats every sentence 3 times: no singletons, so estimators use fallbacks."""
    tok = Tokenizer.build(TINY_LINES, kind="char")
    lm = build_ngram(tok, TINY_LINES, 4, smoothing)
    logp = lm.next_token_logprobs(contexts(tok, TINY_LINES)).double()
    assert logp.exp().sum(dim=1).numpy() == pytest.approx(1.0, abs=2e-6)
    assert torch.all(torch.isfinite(logp[:, [UNK_ID, EOS_ID]]))


# -- one interface ----------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_sequence_logprobs_equal_step_by_step(zipf_lines, zipf_tokenizer, smoothing):
    lm = build_ngram(zipf_tokenizer, zipf_lines[:120], 3, smoothing)
    seqs = [with_boundaries(zipf_tokenizer.encode(line).ids) for line in zipf_lines[120:126]]
    seqs += [[BOS_ID, UNK_ID, 5, UNK_ID, EOS_ID], [BOS_ID, EOS_ID]]
    scores = lm.sequence_logprobs(seqs)
    for seq, score in zip(seqs, scores, strict=True):
        assert score.dtype == torch.float64 and len(score) == len(seq) - 1
        state = lm.start_state(1)
        for i in range(len(seq) - 1):
            logp, state = lm.step(state, torch.tensor([seq[i]]))
            assert float(logp[0, seq[i + 1]]) == pytest.approx(float(score[i]), abs=1e-5)
        prefill = lm.next_token_logprobs([seq[:-1]])
        assert float(prefill[0, seq[-1]]) == pytest.approx(float(score[-1]), abs=1e-5)


def test_prefill_then_step_matches_and_states_join(zipf_lines, zipf_tokenizer):
    lm = build_ngram(zipf_tokenizer, zipf_lines[:120], 4, "kn")
    a = with_boundaries(zipf_tokenizer.encode(zipf_lines[130]).ids, eos=False)
    b = [BOS_ID, 7]
    logp, state = lm.prefill([a, b])  # different lengths, rows come back in order
    assert torch.allclose(logp[1], lm.next_token_logprobs([b])[0])
    joined = lm.concat_states([lm.select_state(state, [1]), lm.select_state(state, [0])])
    step, _ = lm.step(joined, torch.tensor([EOS_ID, 9]))
    expected = lm.next_token_logprobs([[*b, EOS_ID], [*a, 9]])
    assert torch.allclose(step, expected)


def test_unknown_text_has_finite_perplexity(zipf_lines, zipf_tokenizer):
    for smoothing in SMOOTHINGS:
        lm = build_ngram(zipf_tokenizer, zipf_lines[:120], 3, smoothing)
        result = evaluate_lines(lm, ["外星人来了", zipf_lines[140]])
        assert result["oov"] >= 2 and math.isfinite(result["perplexity"])


def test_smoothing_formulas_by_hand():
    tok = Tokenizer(kind="char", tokens=["<pad>", "<unk>", "<bos>", "<eos>", "a", "b"])
    seqs = [with_boundaries(tok.encode(s).ids) for s in ("ab", "aab", "b")]
    a, b, size = 4, 5, 4  # V' = {<unk>, <eos>, a, b}
    # c(a a) = 1, c(a b) = 2, c(a) as a context = 3
    addk = from_sequences(tok, seqs, 2, "addk", k=0.5)
    p = addk.next_token_logprobs([[BOS_ID, a]])[0].double().exp()
    assert float(p[b]) == pytest.approx((2 + 0.5) / (3 + 0.5 * size), rel=1e-6)
    assert float(p[UNK_ID]) == pytest.approx(0.5 / (3 + 0.5 * size), rel=1e-6)
    interp = from_sequences(tok, seqs, 2, "interp", epsilon=2.0)
    unigram_b = (3 + 2.0 / size) / (9 + 2.0)  # c(b) = 3 of N = 9 predicted tokens (<eos> too)
    p = interp.next_token_logprobs([[BOS_ID, a]])[0].double().exp()
    assert float(p[b]) == pytest.approx((2 + 2.0 * unigram_b) / (3 + 2.0), rel=1e-6)
    # Katz: too few counts for Good-Turing, so absolute discounts. 2-grams seen 2,1,2,1,3 times:
    # D = n1 / (n1 + 2 n2) = 1/3. 1-grams a, b, </s> 3 times each: D = 0.5, P = 2.5/9 each and
    # <unk> gets the rest, 1.5/9. After "a": p*(b) = (2 - 1/3)/3, p*(a) = (1 - 1/3)/3, freed 2/9,
    # shared by </s> and <unk> in proportion to their 1-gram probabilities (4/9 of the mass).
    katz = from_sequences(tok, seqs, 2, "katz")
    p = katz.next_token_logprobs([[BOS_ID, a]])[0].double().exp()
    expected = {b: 5 / 9, a: 2 / 9, EOS_ID: (2 / 9) / (4 / 9) * 2.5 / 9, UNK_ID: (2 / 9) / (4 / 9) * 1.5 / 9}
    assert {t: float(p[t]) for t in expected} == pytest.approx(expected, rel=1e-6)


# -- checks ----------------------------------------------------------------------------------------
def test_bad_parameters_and_ids_are_refused(zipf_tokenizer):
    seqs = [[BOS_ID, 5, EOS_ID]]
    with pytest.raises(ValueError, match="k must be"):
        from_sequences(zipf_tokenizer, seqs, 2, "addk", k=0)
    with pytest.raises(ValueError, match="epsilon"):
        from_sequences(zipf_tokenizer, seqs, 2, "interp", epsilon=-1)
    with pytest.raises(ValueError, match="smoothing"):
        build_ngram(zipf_tokenizer, ["的"], 2, "witten-bell")
    lm = from_sequences(zipf_tokenizer, seqs, 2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.sequence_logprobs([[BOS_ID, zipf_tokenizer.vocab_size]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.step(lm.start_state(1), torch.tensor([-3]))


# -- checkpoints and the CLI --------------------------------------------------------------------------
def test_checkpoint_roundtrip_and_tamper(tmp_path, zipf_lines, zipf_tokenizer):
    lm = build_ngram(zipf_tokenizer, zipf_lines[:120], 3, "katz")
    out = save_ngram(tmp_path / "katz3", lm, {"note": "test"})
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ngram" and config["order"] == 3 and config["smoothing"] == "katz"
    loaded = load_model(out)
    assert isinstance(loaded, NGramLanguageModel) and loaded.describe()["order"] == 3
    seqs = [with_boundaries(zipf_tokenizer.encode(zipf_lines[125]).ids)]
    assert torch.equal(loaded.sequence_logprobs(seqs)[0], lm.sequence_logprobs(seqs)[0])
    data = bytearray((out / TABLES).read_bytes())
    data[-3] ^= 0xFF
    (out / TABLES).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(out)


def test_cli_train_ngram_writes_checkpoint_and_evaluates(tmp_path, tiny_corpus, capsys):
    out = tmp_path / "kn3"
    assert main(["train-ngram", "--data", str(tiny_corpus), "--out", str(out), "--order", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["valid"]["perplexity"] > 1 and metrics["test"]["tokens"] > 0
    assert metrics["build"]["peak_rss_mb"] > 0
    assert "Kneser-Ney" in (out / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(tiny_corpus)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"] == pytest.approx(metrics["test"]["perplexity"])


def test_cli_train_ngram_tunes_k_on_valid(tmp_path, tiny_corpus, capsys):
    out = tmp_path / "addk"
    assert (
        main(
            [
                "train-ngram",
                "--data",
                str(tiny_corpus),
                "--out",
                str(out),
                "--order",
                "2",
                "--smoothing",
                "addk",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    best = min(metrics["tuning"], key=lambda t: t["valid_perplexity"])
    assert metrics["params"]["k"] == best["k"]
    assert metrics["valid"]["perplexity"] == pytest.approx(best["valid_perplexity"])
    assert main(["train-ngram", "--data", str(tiny_corpus), "--out", str(out), "--order", "0"]) == 2
    assert "order" in capsys.readouterr().err
