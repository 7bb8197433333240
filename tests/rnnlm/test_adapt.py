"""`rnnlm adapt`: fine-tune + a domain n-gram, λ tuned on held-out lines; bad text writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from model.models.loading import load_model
from model.training.adapt import AdaptError, AdaptJob, adapt, hold_out, read_text_lines
from rnnlm.cli import main

from .test_fit import TINY_RNN, fit

DOMAIN = [
    f"第{i}号商品的质量很好，物流也很快。" if i % 2 else f"这家酒店第{i}层的房间很干净。" for i in range(60)
]
TINY_BUDGET = {"max_minutes": 0.0, "max_tokens": 1500, "eval_every_tokens": 500, "batch_size": 4, "bptt": 8}


@pytest.fixture()
def base(corpus_link, capsys) -> Path:
    out = fit(corpus_link, "base", *TINY_RNN)
    capsys.readouterr()
    return out


@pytest.fixture()
def text(tmp_path) -> Path:
    path = tmp_path / "domain.txt"
    path.write_text("\n".join(DOMAIN) + "\n", encoding="utf-8")
    return path


def _job(base: Path, text: Path, out: Path, **kw) -> AdaptJob:
    return AdaptJob(
        base=str(base), texts=[str(text)], out_dir=str(out), device="cpu", fit_overrides=TINY_BUDGET, **kw
    )


def test_adapting_writes_a_mixture_with_its_parts_that_fits_the_held_out_text_better(base, text, tmp_path):
    out = tmp_path / "adapted"
    metrics = adapt(_job(base, text, out), log=lambda _: None)
    lm = load_model(out)
    assert lm.kind == "mixture"
    assert lm.mode == "sentence" and lm.a.kind == "rnn" and lm.b.kind == "mixture"  # base beside domain
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"finetuned", "domain-kn5", "domain"}
    assert load_model(out / "finetuned").kind == "rnn"
    held = metrics["held_out"]
    assert held["adapted"] < held["base"]
    assert held["domain"] <= min(held["finetuned"], held["domain_kn"]) + 1e-6  # λ tuned on these lines
    # the base's own text: the sentence mixture stays near the base (the domain part alone does not)
    from model.models.evaluate import evaluate_lines
    from model.text.data import load_split

    news = load_split(base.parent.parent / "corpus", "valid")
    base_ppl, adapted_ppl = (evaluate_lines(m, news)["perplexity"] for m in (load_model(base), lm))
    assert adapted_ppl < evaluate_lines(lm.b, news)["perplexity"]
    assert adapted_ppl < base_ppl * 2 ** (1 / 5)  # at most ln 2 per sentence of ≥ 5 tokens
    assert metrics["finetune"]["replay_lines"] > 0  # the base's corpus is here: replayed beside the text
    assert not any(p.name.startswith(".adapted") for p in tmp_path.iterdir())


def test_a_hybrid_is_fine_tuned_over_its_own_n_gram(corpus_link, text, tmp_path, capsys):
    hybrid = fit(
        corpus_link,
        "hyb",
        "--kind",
        "hybrid",
        "--ngram-order",
        "3",
        "--folds",
        "2",
        "--ngram-dir",
        str(corpus_link / "kn3"),
        *TINY_RNN,
    )
    capsys.readouterr()
    out = tmp_path / "adapted-hybrid"
    adapt(_job(hybrid, text, out, replay=0.0), log=lambda _: None)
    finetuned = json.loads((out / "finetuned" / "config.json").read_text())
    assert finetuned["model_type"] == "hybrid"
    assert (out / "finetuned" / finetuned["ngram"]["path"]).resolve() == (corpus_link / "kn3").resolve()
    assert load_model(out).kind == "mixture"


def test_held_out_lines_are_every_tenth() -> None:
    train, held = hold_out([str(i) for i in range(30)])
    assert held == ["9", "19", "29"] and len(train) == 27


def _bad_texts(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x7fELF\x00\x01" * 100)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 40)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "missing": (tmp_path / "nope.txt", "no such file"),
        "empty": (empty, "0 non-empty lines"),
        "binary": (binary, "binary data"),
        "not utf-8": (latin, "not UTF-8"),
        "fifo": (fifo, "not a regular file"),
        "directory": (tmp_path, "not a regular file"),
    }


def test_bad_text_is_one_clear_error_and_writes_nothing(base, tmp_path, capsys):
    for case, (path, words) in _bad_texts(tmp_path).items():
        out = tmp_path / f"out-{case.replace(' ', '-')}"
        before = sorted(p.name for p in tmp_path.iterdir())
        code = main(["adapt", "--from", str(base), "--text", str(path), "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 1, case
        assert "--text" in err and words in err and len(err.splitlines()) == 1, (case, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, case  # nothing written


def test_a_short_text_and_an_existing_out_are_refused(base, text, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("一句话而已\n" * 5, encoding="utf-8")
    with pytest.raises(AdaptError, match="at least"):
        read_text_lines([short])
    (tmp_path / "taken").mkdir()
    with pytest.raises(AdaptError, match="exists"):
        adapt(_job(base, text, tmp_path / "taken"), log=lambda _: None)


def test_the_adaptation_benchmark_compares_base_ngram_only_and_adapted(base, corpus_link, tmp_path, capsys):
    from model.text.data import write_corpus

    domain = tmp_path / "reviews"
    write_corpus(domain, {"train": DOMAIN, "valid": DOMAIN[:8], "test": DOMAIN[:12]}, {"name": "reviews"})
    out = tmp_path / "ADAPT.md"
    args = ["benchmark", "adapt", "--from", str(base), "--domain", f"reviews={domain}"]
    args += ["--other", f"news={corpus_link.parent / 'corpus'}", "--sizes", "600", "--minutes", "0.05"]
    args += ["--work", str(tmp_path / "work"), "--out", str(out), "--set-size", "3"]
    assert main(args) == 0
    record = json.loads((tmp_path / "ADAPT-adaptation.json").read_text())
    (run,) = record["runs"]
    assert set(run["adapted"]) == set(record["base_row"]) == {"reviews", "news", "homophone", "wordorder"}
    assert run["adapted"]["reviews"] < record["base_row"]["reviews"]
    assert "<!-- adaptation:start -->" in out.read_text(encoding="utf-8")
