"""Count pruning keeps a normalized backoff model (model/models/ngram/prune.py)."""

from __future__ import annotations

import numpy as np
import pytest

from model.models.ngram.counts import count_ngrams
from model.models.ngram.model import NGramLanguageModel, from_sequences
from model.models.ngram.prune import kept_ngrams, parse_thresholds, prune
from model.models.ngram.smoothing import kneser_ney
from model.text.batching import with_boundaries
from model.text.tokenizer import Tokenizer

LINES = [
    "厨房里食油用完了",
    "厨房里石油用完了",
    "我们明天去公园散步",
    "我们今天去公园",
    "你先走吧",
    "你先走",
    "公园里人很多",
] * 3 + [
    "今天天气很好",
    "明天天气不好",
    "食油和石油不一样",
]


@pytest.fixture(scope="module")
def counted():
    tok = Tokenizer.build(LINES)
    seqs = [with_boundaries(tok.encode(line).ids) for line in LINES]
    counts = count_ngrams(seqs, 4, tok.vocab_size)
    tables, _ = kneser_ney(counts)
    return tok, seqs, counts, tables


def _all_contexts(tables, order: int) -> np.ndarray:
    """Every history the tables know, left-padded to order-1 (the ones where backoffs matter)."""
    rows = []
    for n in range(1, order):
        for gram in tables.ngram_tokens(n):
            rows.append([0] * (order - 1 - n) + list(gram))
    return np.array(rows, dtype=np.int64)


def test_every_context_of_a_pruned_model_sums_to_one(counted) -> None:
    _, _, counts, tables = counted
    pruned = prune(counts, tables, [0, 0, 1, 1])
    assert sum(pruned.sizes()) < sum(tables.sizes())
    histories = _all_contexts(pruned, 4)
    totals = np.exp(pruned.next_logprobs(histories)).sum(axis=1)
    np.testing.assert_allclose(totals, 1.0, atol=1e-5)


def test_kept_ngrams_keep_their_probability_and_their_prefixes_and_suffixes(counted) -> None:
    _, _, counts, tables = counted
    keep = kept_ngrams(counts, [0, 0, 1, 1])
    for n in range(2, counts.order + 1):
        kept = keep[n - 1]
        assert keep[n - 2][counts[n].prefix[kept]].all() and keep[n - 2][counts[n].suffix[kept]].all()
        assert (counts[n].counts[~kept] <= 1).all()
    pruned = prune(counts, tables, [0, 0, 1, 1])
    np.testing.assert_array_equal(pruned.logprob[3], tables.logprob[3][keep[3]])


def test_thresholds_of_zero_change_nothing(counted) -> None:
    tok, seqs, counts, tables = counted
    same = prune(counts, tables, [0, 0, 0, 0])
    for a, b in zip(same.logbackoff, tables.logbackoff, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    full = NGramLanguageModel(tables, tok).sequence_logprobs(seqs)
    again = from_sequences(tok, seqs, 4, "kn", prune="0 0 0 0").sequence_logprobs(seqs)
    for x, y in zip(full, again, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0 0 1", [0, 0, 1, 1, 1]), ([0, 1], [0, 1, 1, 1, 1]), ("0 0 0 1 1", [0, 0, 0, 1, 1])],
)
def test_parse_thresholds_repeats_the_last_as_lmplz(spec, expected) -> None:
    assert parse_thresholds(spec, 5) == expected


@pytest.mark.parametrize("spec", ["", "1 1", "0 2 1", "0 -1"])
def test_parse_thresholds_refuses_what_lmplz_would(spec) -> None:
    with pytest.raises(ValueError):
        parse_thresholds(spec, 5)


def test_quantized_tables_load_back_close_and_much_smaller(counted, tmp_path) -> None:
    from model.models.ngram.quantize import quantize
    from model.models.ngram.store import load_ngram, save_ngram

    tok, seqs, _, tables = counted
    lm = NGramLanguageModel(tables, tok, "kn")
    save_ngram(tmp_path / "plain", lm)
    save_ngram(tmp_path / "q8", lm, quantize_bits=8)
    plain, q8 = load_ngram(tmp_path / "plain"), load_ngram(tmp_path / "q8")
    for n in range(2, tables.order + 1):
        assert np.abs(q8.tables.logprob[n - 1] - plain.tables.logprob[n - 1]).max() < 0.35
    a = sum(float(t.sum()) for t in plain.sequence_logprobs(seqs))
    b = sum(float(t.sum()) for t in q8.sequence_logprobs(seqs))
    assert abs(a - b) / abs(a) < 0.03
    values = np.random.default_rng(0).normal(size=10_000)
    codes, centers = quantize(values)
    assert codes.dtype == np.uint8 and len(np.unique(codes)) == 256
    assert np.abs(centers[codes] - values).mean() < 0.02
