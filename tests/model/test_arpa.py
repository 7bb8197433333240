"""ARPA files: our Kneser-Ney equals KenLM's lmplz, files from KenLM/SRILM load as they are,
and our files load in KenLM with the same scores."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.models.evaluate import evaluate_lines
from model.models.loading import load_model
from model.models.ngram.arpa import ArpaError, read_arpa, write_arpa
from model.models.ngram.model import NGramLanguageModel, build_ngram
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer
from rnnlm.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "lmplz"
LMPLZ_ARPA = FIXTURES / "corpus-o3.arpa.gz"  # `lmplz -o 3` on corpus.txt (see the README there)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return (FIXTURES / "corpus.txt").read_text(encoding="utf-8").split()


def as_table(lm: NGramLanguageModel) -> dict[tuple[str, ...], tuple[float, float]]:
    """{n-gram as strings: (ln p, ln backoff)} for every listed n-gram (<s>'s ln p left out)."""
    out = {}
    tokens = lm.tokenizer.tokens
    for n in range(1, lm.order + 1):
        ids = lm.tables.ngram_tokens(n)
        logp = lm.tables.logprob[n - 1]
        bo = lm.tables.logbackoff[n - 1] if n < lm.order else np.zeros(len(ids))
        for row, p, b in zip(ids.tolist(), logp.tolist(), bo.tolist(), strict=True):
            if row != [0]:  # <pad>
                out[tuple(tokens[i] for i in row)] = (p if row != [BOS_ID] else 0.0, b)
    return out


def test_our_kneser_ney_equals_lmplz(corpus):
    kenlm_lm, _ = read_arpa(LMPLZ_ARPA)
    ours = build_ngram(Tokenizer.build(corpus, kind="char"), corpus, 3, "kn")
    theirs, mine = as_table(kenlm_lm), as_table(ours)
    assert theirs.keys() == mine.keys()  # the same n-grams, <s>/</s>/<unk> included
    worst = max(abs(theirs[g][k] - mine[g][k]) for g in theirs for k in (0, 1))
    assert worst < 1e-5  # ARPA keeps ~7 digits


def test_lmplz_file_scores_as_it_is(corpus, tmp_path):
    lm = load_model(LMPLZ_ARPA)  # a bare .arpa.gz, no conversion step
    assert lm.tokenizer.kind == "char" and lm.order == 3
    ours = build_ngram(Tokenizer.build(corpus, kind="char"), corpus, 3, "kn")
    lines = [*corpus[:20], "外星人来了"]
    assert evaluate_lines(lm, lines)["perplexity"] == pytest.approx(
        evaluate_lines(ours, lines)["perplexity"], rel=1e-5
    )
    probs = lm.next_token_logprobs([[BOS_ID], [BOS_ID, UNK_ID, 5]]).double().exp()
    assert probs.sum(dim=1).numpy() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("smoothing", ["kn", "katz", "interp", "addk"])
@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_write_then_read_is_the_same_model(corpus, tmp_path, smoothing, name):
    lm = build_ngram(Tokenizer.build(corpus[:100], kind="char"), corpus[:100], 3, smoothing)
    path = write_arpa(lm, tmp_path / name)
    back, _ = read_arpa(path)
    assert back.tokenizer.tokens == lm.tokenizer.tokens  # same ids: specials first, then file order
    assert back.tables.sizes() == lm.tables.sizes()
    for n in range(1, 4):
        assert np.array_equal(back.tables.keys[n - 1], lm.tables.keys[n - 1])
        np.testing.assert_allclose(back.tables.logprob[n - 1], lm.tables.logprob[n - 1], atol=1e-6)
    seqs = [with_boundaries(lm.tokenizer.encode(line).ids) for line in corpus[100:110]]
    for a, b in zip(back.sequence_logprobs(seqs), lm.sequence_logprobs(seqs), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            assert f.readline() == "\\data\\\n"


SRILM_STYLE = """
written by hand in SRILM's style: <s> at -99, no <unk>, and a 3-gram whose prefix is pruned

\\data\\
ngram 1=4
ngram 2=3
ngram 3=2

\\1-grams:
-99\t<s>\t-0.30103
-0.60206\t</s>
-0.30103\tred\t-0.1
-0.60206\twine\t-0.2

\\2-grams:
-0.1\t<s> red\t-0.05
-0.2\tred wine
-0.3\twine </s>

\\3-grams:
-0.02\tred wine </s>
-0.01\t<s> wine </s>

\\end\\
"""


def test_srilm_style_file_with_missing_unk_and_prefix(tmp_path):
    path = tmp_path / "srilm.arpa"
    path.write_text(SRILM_STYLE, encoding="utf-8")
    lm, info = read_arpa(path)
    assert lm.tokenizer.kind == "word"  # "red", "wine": not single characters
    assert info["unk_substituted_log10"] == -100.0  # as KenLM does
    assert info["added_prefixes"] == 1  # "<s> wine", the prefix of "<s> wine </s>"
    red, wine = lm.tokenizer.token_id("red"), lm.tokenizer.token_id("wine")
    ln10 = math.log(10)
    scores = lm.sequence_logprobs(
        [[BOS_ID, red, wine, EOS_ID], [BOS_ID, red, red], [BOS_ID, wine, EOS_ID], [wine, EOS_ID]]
    )
    # "<s> red wine" is not listed: b(<s> red) · P(wine | red)
    assert scores[0].tolist() == pytest.approx([-0.1 * ln10, (-0.05 - 0.2) * ln10, -0.02 * ln10], abs=1e-6)
    # "<s> red red" and "red red" are not listed: b(<s> red) · b(red) · P(red)
    assert float(scores[1][1]) == pytest.approx((-0.05 - 0.1 - 0.30103) * ln10, abs=1e-6)
    # the added prefix keeps its backed-off probability b(<s>) · P(wine), and its 3-gram is reachable
    assert scores[2].tolist() == pytest.approx([(-0.30103 - 0.60206) * ln10, -0.01 * ln10], abs=1e-6)
    assert float(scores[3][0]) == pytest.approx(-0.3 * ln10, abs=1e-6)  # no <s>: the 2-gram
    step = lm.next_token_logprobs([[BOS_ID, red], [BOS_ID, wine]]).double()
    assert float(step[0, red]) == pytest.approx(float(scores[1][1]), abs=1e-5)
    assert float(step[1, EOS_ID]) == pytest.approx(-0.01 * ln10, abs=1e-5)
    assert float(step[0, UNK_ID]) == pytest.approx((-0.05 - 0.1 - 100) * ln10, rel=1e-6)


def test_malformed_files_are_refused(tmp_path):
    cases = {
        "truncated": SRILM_STYLE.split("\\3-grams:")[0],
        "wrong count": SRILM_STYLE.replace("ngram 2=3", "ngram 2=4"),
        "unknown word": SRILM_STYLE.replace("-0.2\tred wine", "-0.2\tred beer"),
        "not arpa": "hello world\n",
        "bad number": SRILM_STYLE.replace("-0.2\tred wine", "abc\tred wine"),
    }
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.arpa"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ArpaError):
            read_arpa(path)


def test_tokens_arpa_cannot_spell_are_refused(tmp_path):
    tok = Tokenizer.build(["a b", "b a"], kind="char")  # the space is a token
    lm = build_ngram(tok, ["a b", "b a"], 2, "kn")
    with pytest.raises(ValueError, match="whitespace"):
        write_arpa(lm, tmp_path / "x.arpa")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_export_and_import(tmp_path, tiny_corpus, capsys):
    model_dir = tmp_path / "kn"
    assert main(["train-ngram", "--data", str(tiny_corpus), "--out", str(model_dir), "--order", "3"]) == 0
    arpa = tmp_path / "kn.arpa.gz"
    assert main(["export-arpa", str(model_dir), str(arpa)]) == 0
    imported_dir = tmp_path / "imported"
    assert main(["import-arpa", str(arpa), "--out", str(imported_dir), "--data", str(tiny_corpus)]) == 0
    capsys.readouterr()
    original = json.loads((model_dir / "metrics.json").read_text())
    imported = json.loads((imported_dir / "metrics.json").read_text())
    assert imported["test"]["perplexity"] == pytest.approx(original["test"]["perplexity"], rel=1e-5)
    assert imported["source"]["sha256"]
    missing = ["export-arpa", str(tmp_path / "missing"), str(tmp_path / "x.arpa")]
    assert main(missing) == 1  # a failure (a missing checkpoint), not a usage error


def test_kenlm_scores_our_arpa_the_same(corpus, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    for smoothing in ("kn", "katz"):
        lm = build_ngram(Tokenizer.build(corpus[:120], kind="char"), corpus[:120], 4, smoothing)
        path = write_arpa(lm, tmp_path / f"{smoothing}.arpa")
        model = kenlm.Model(str(path))
        for line in [*corpus[120:140], "外星人来了"]:
            theirs = model.score(" ".join(line), bos=True, eos=True) * math.log(10)
            ours = float(lm.sequence_logprobs([with_boundaries(lm.tokenizer.encode(line).ids)])[0].sum())
            assert ours == pytest.approx(theirs, abs=1e-4)
