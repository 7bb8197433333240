"""`--normalize`: a word tokenizer records how its corpus was prepared and reads raw text that way."""

from __future__ import annotations

import json
from pathlib import Path

from model.models.loading import load_model
from model.text.data import write_corpus
from rnnlm.cli import main

LINES = [
    "I don 't know what it 's about .",
    "The well @-@ known road is 3 @.@ 5 miles long .",
    "They don 't want to go there .",
    "It 's a long way to the top .",
] * 4


def test_train_ngram_records_the_normalizer_and_reads_raw_text(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"train": LINES, "valid": LINES[:2], "test": LINES[2:4]}, {"name": "tiny-en"})
    out = tmp_path / "kn"
    args = ["train-ngram", "--data", str(corpus), "--out", str(out), "--order", "3", "--tokenizer", "word"]
    assert main([*args, "--normalize", "wikitext"]) == 0
    assert json.loads((out / "tokenizer.json").read_text())["normalizer"] == "wikitext"
    lm = load_model(str(out))
    raw = lm.tokenizer.encode("I don't know what it's about.")
    prepared = lm.tokenizer.encode("I don 't know what it 's about .")
    assert raw.ids == prepared.ids and raw.oov == 0


def test_without_it_raw_text_meets_unknown_words(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"train": LINES, "valid": LINES[:2], "test": LINES[2:4]}, {"name": "tiny-en"})
    out = tmp_path / "kn"
    assert (
        main(["train-ngram", "--data", str(corpus), "--out", str(out), "--order", "3", "--tokenizer", "word"])
        == 0
    )
    assert "normalizer" not in json.loads((out / "tokenizer.json").read_text())
    assert load_model(str(out)).tokenizer.encode("I don't know what it's about.").oov > 0
