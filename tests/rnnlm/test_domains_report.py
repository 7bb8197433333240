"""`rnnlm benchmark domains`: a row per model and per training corpus's 5-gram, a cell per domain."""

from __future__ import annotations

import json

import pytest

from model.text.data import write_corpus
from rnnlm.cli import main
from rnnlm.reports.domains import parse_named

NEWS = ["新华社记者今天报道了这个消息", "人民日报发表新年讲话全文", "中国人民银行今天发布消息"] * 8
REVIEWS = ["这本书写得很好值得一读", "酒店的房间很干净服务也好", "物流很快商品质量也不错"] * 8


@pytest.fixture()
def domains(tmp_path):
    for name, lines in (("news", NEWS), ("reviews", REVIEWS)):
        write_corpus(tmp_path / name, {"train": lines, "valid": lines[:6], "test": lines[:6]}, {"name": name})
    return tmp_path


def test_the_table_has_every_model_in_every_domain(domains, tiny_model_dir, capsys):
    out = domains / "RESULTS.md"
    out.write_text("# Results\n\nkept text\n", encoding="utf-8")
    args = [
        "benchmark",
        "domains",
        "--domain",
        f"news={domains / 'news'}",
        "--domain",
        f"reviews={domains / 'reviews'}",
    ]
    args += ["--model", str(tiny_model_dir), "--out", str(out), "--ngram-dir", str(domains / "ngram")]
    args += ["--sets-dir", str(domains / "sets"), "--size", "4", "--min-len", "4", "--min-count", "1"]
    assert main(args) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("# Results\n\nkept text") and "<!-- domains:start -->" in page
    record = json.loads((domains / "RESULTS-domains.json").read_text(encoding="utf-8"))
    assert [r["model"] for r in record["rows"]] == ["KN 5-gram of news", "KN 5-gram of reviews", "tiny-lstm"]
    for row in record["rows"]:
        assert set(row["domains"]) == {"news", "reviews"}
        assert f"| {row['model']} |" in page
    by_name = {r["model"]: r for r in record["rows"]}
    # each 5-gram knows its own domain far better than the other one
    for own, other in (("news", "reviews"), ("reviews", "news")):
        cells = by_name[f"KN 5-gram of {own}"]["domains"]
        assert cells[own]["perplexity"] < cells[other]["perplexity"]


@pytest.mark.parametrize("value", ["news", "=data", "news=", "news=/no/such/dir"])
def test_named_corpora_must_be_name_equals_corpus_dir(value):
    with pytest.raises(ValueError, match="--domain"):
        parse_named([value], "--domain")


def test_context_zero_is_the_plain_perplexity_and_the_table_lists_each_k(domains, tiny_model_dir):
    from model.models.evaluate import evaluate_lines
    from model.models.loading import load_model
    from rnnlm.reports.context import context_perplexities

    lm = load_model(tiny_model_dir)
    lines = NEWS[:6]
    ppl = context_perplexities(lm, lines, max_context=2)
    assert len(ppl) == 3
    assert ppl[0] == pytest.approx(evaluate_lines(lm, lines)["perplexity"], rel=1e-5)
    assert ppl[1] != pytest.approx(ppl[0], rel=1e-6)  # the context is read
    out = domains / "ADAPT.md"
    args = ["benchmark", "context", "--domain", f"news={domains / 'news'}", "--model", str(tiny_model_dir)]
    assert main([*args, "--out", str(out), "--max-context", "1"]) == 0
    assert "| tiny-lstm | news |" in out.read_text(encoding="utf-8")
