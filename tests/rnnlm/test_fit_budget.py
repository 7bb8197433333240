"""`rnnlm fit --max-minutes`: a limit on the whole run, the final evaluation and the model card
included, as for `rnnlm train` (tests/rnnlm/test_train_cli.py)."""

from __future__ import annotations

import json
import time

from rnnlm.cli import main

from .test_train_cli import long_line_corpus


def test_fit_budget_includes_the_final_evaluation_and_the_card(tmp_path, capsys):
    corpus = long_line_corpus(tmp_path / "corpus")
    out = tmp_path / "m"
    budget_s = 0.02 * 60
    start = time.monotonic()
    code = main(
        [
            "fit",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "emb_dim=16",
            "--model",
            "hidden_dim=16",
            "--batch-size",
            "4",
            "--bptt",
            "8",
            "--eval-every-tokens",
            "100000000",
            "--device",
            "cpu",
            "--max-minutes",
            "0.02",
        ]
    )
    wall = time.monotonic() - start
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert wall < budget_s + 15, wall  # generous: setup, a loaded machine; not minutes
    assert metrics["train_time_s"] <= budget_s  # training stopped with time left for the evaluation
    assert metrics["test"]["tokens"] > 0 and metrics["final_eval_s"] >= 0
    valid = [r for r in metrics["history"] if r["event"] == "valid"]
    assert valid[0]["step"] == 0  # a timed run validates and saves at once: the evaluation is timed on it
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"{metrics['test']['perplexity']:.2f}" in card
    assert "final evaluation included" in capsys.readouterr().out


def test_fit_without_final_evaluation_keeps_no_time_for_it(tmp_path, capsys):
    corpus = long_line_corpus(tmp_path / "corpus", line_chars=2000)
    out = tmp_path / "m"
    args = ["fit", "--data", str(corpus), "--out", str(out), "--run-dir", str(tmp_path / "run")]
    args += ["--model", "emb_dim=8", "--model", "hidden_dim=8", "--batch-size", "4", "--bptt", "8"]
    args += ["--device", "cpu", "--max-minutes", "0.01", "--no-final-eval"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" not in metrics and not (out / "MODEL_CARD.md").exists()
    assert metrics["history"][0]["step"] > 0  # no step-0 validation: nothing to time
