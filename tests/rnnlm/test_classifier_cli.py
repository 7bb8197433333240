"""``rnnlm prepare-reviews-labelled``, ``train-classifier`` and ``evaluate-classifier``
(rnnlm/classifier_cli.py), end to end on tiny data: the split files, a trained classifier scored by
the evaluate command, the naive-Bayes peer, and the usage errors."""

from __future__ import annotations

import json

import pytest

from model.text.corpora import review_split
from rnnlm.cli import main

from ..model.test_classifier import write_labelled
from ..model.test_corpora import _fake_sdist


def test_prepare_reviews_labelled_writes_the_lm_split(tmp_path, capsys):
    pos = [f"第{i}本书写得很好，值得一读。作者的文笔很流畅。" for i in range(60)]
    neg = [f"第{i}家酒店的服务太差了！房间也不干净。" for i in range(60)]
    _fake_sdist(tmp_path, {"pos": pos, "neg": neg})
    out = tmp_path / "labelled"
    assert main(["prepare-reviews-labelled", "--out", str(out), "--cache", str(tmp_path)]) == 0
    assert "dropped" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    kept = sum(s["reviews"] for s in manifest["splits"].values())
    dropped = manifest["source"]["dropped"]["held_out_sharing_an_lm_train_sentence"]
    assert dropped > 0 and kept + dropped == 120  # "作者的文笔很流畅。" is in the LM's train text
    for name in ("train", "valid", "test"):
        for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert review_split(row["text"]) == name and row["label"] in ("pos", "neg")


def test_train_then_evaluate(tiny_model_dir, tmp_path, capsys):
    data = write_labelled(tmp_path / "data")
    out = tmp_path / "clf"
    argv = ["train-classifier", "--data", str(data), "--out", str(out), "--init-from-lm", str(tiny_model_dir)]
    argv += ["--epochs", "2", "--batch-chars", "64", "--label-fraction", "0.5", "--device", "cpu"]
    assert main(argv) == 0
    trained = capsys.readouterr().out
    assert "training texts" in trained and "saved" in trained
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_config"]["label_fraction"] == 0.5 and metrics["train_config"]["lm_weights"]
    assert main(["evaluate-classifier", "--model", str(out), "--data", str(data), "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == metrics["test"]["accuracy"] and scores["texts"] == metrics["test"]["texts"]
    assert main(["evaluate-classifier", "--naive-bayes", "--data", str(data), "--limit", "2"]) == 0
    peer = json.loads(capsys.readouterr().out)
    assert peer["texts"] == 2 and peer["model"].startswith("naive Bayes")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-lm-weights"], "needs --init-from-lm"),
        (["--finetune-lm-on", "x"], "--finetune-lm-on needs --init-from-lm"),
        (["--head-dropout", "1.5"], "--head-dropout must be in"),
        (["--layer-lr-factor", "0.5"], "--layer-lr-factor must be at least 1"),
    ],
)
def test_usage_errors(tmp_path, capsys, extra, message):
    data = write_labelled(tmp_path / "data")
    assert main(["train-classifier", "--data", str(data), "--out", str(tmp_path / "c"), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--label-fraction", "0"], ["--schedule", "hmm"], ["--head-dim", "-1"]])
def test_out_of_range_options_are_refused(tmp_path, argv):
    with pytest.raises(SystemExit) as done:
        main(["train-classifier", "--data", str(tmp_path), "--out", str(tmp_path / "c"), *argv])
    assert done.value.code == 2


def test_missing_files_are_one_line(tmp_path, capsys):
    data = write_labelled(tmp_path / "data")
    assert main(["evaluate-classifier", "--model", str(tmp_path / "none"), "--data", str(data)]) == 1
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert main(["evaluate-classifier", "--naive-bayes", "--data", str(tmp_path / "none")]) == 1
    assert "No such file" in capsys.readouterr().err
