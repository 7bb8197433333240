"""Smoke-train every architecture through the CLI (like pytorch/examples' --dry-run), then
evaluate, resume and check what the checkpoint records."""

import json

import pytest

from model.checkpoint import CARD, load_rnn
from rnnlm.cli import main

TINY = [
    "--emb-dim",
    "16",
    "--hidden-dim",
    "16",
    "--batch-size",
    "8",
    "--bptt",
    "6",
    "--eval-every",
    "0",
    "--warmup-steps",
    "1",
    "--lr",
    "0.01",
    "--no-progress",
]


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_train_then_evaluate_each_cell(tiny_corpus, tmp_path, capsys, cell):
    out = tmp_path / cell
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_corpus),
                "--out",
                str(out),
                "--run-dir",
                str(tmp_path / "run"),
                "--cell",
                cell,
                "--epochs",
                "3",
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    net, tok, metrics = load_rnn(out)
    assert net.config.cell == cell
    assert metrics["test"]["tokens"] > 0 and metrics["valid"]["perplexity"] < len(tok)
    assert len(metrics["data"]["sha256"]) == 3
    assert "perplexity" in (out / CARD).read_text(encoding="utf-8")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    valid = [r["valid_perplexity"] for r in log if r["event"] == "valid"]
    assert len(valid) == 3 and valid[-1] < valid[0]

    assert main(["evaluate", str(out), "--data", str(tiny_corpus), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["perplexity"] == pytest.approx(metrics["test"]["perplexity"], rel=1e-6)
    assert printed["tokens"] == metrics["test"]["tokens"]


def test_training_resumes_where_it_stopped(tiny_corpus, tmp_path, capsys):
    args = [
        "train",
        "--data",
        str(tiny_corpus),
        "--out",
        str(tmp_path / "m"),
        "--run-dir",
        str(tmp_path / "run"),
        *TINY,
    ]
    main([*args, "--epochs", "1"])
    first = json.loads((tmp_path / "m" / "metrics.json").read_text())["total_steps"]
    capsys.readouterr()
    main([*args, "--epochs", "2"])
    assert "resumed from" in capsys.readouterr().out
    second = json.loads((tmp_path / "m" / "metrics.json").read_text())["total_steps"]
    assert second == 2 * first  # the second run did only the second epoch


def test_prepare_plain_corpus(tmp_path, capsys):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text("你好\n世界\n", encoding="utf-8")
    code = main(
        [
            "prepare-data",
            "plain",
            "--out",
            str(tmp_path / "c1"),
            "--train",
            str(tmp_path / "a.txt"),
            "--valid",
            str(tmp_path / "b.txt"),
            "--test",
            str(tmp_path / "c.txt"),
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["lines"] == 2
    assert main(["prepare-data", "plain", "--out", str(tmp_path / "c2")]) == 2
