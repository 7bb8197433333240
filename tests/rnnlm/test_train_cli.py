"""Smoke-train every architecture through the CLI (like pytorch/examples' --dry-run), then
evaluate, resume and check what the checkpoint records."""

import json

import pytest
import torch

from model.models.checkpoint import CARD, load_rnn
from model.training.budget import TimeBudget
from model.training.config import TrainConfig
from model.training.train import Trainer, TrainJob
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


# -- the time budget -------------------------------------------------------------------------------
def long_line_corpus(path, line_chars: int = 40_000):
    """Eight very long train lines: with --bptt 4 one batch of 8 is 10,000 optimizer steps (seconds),
    so only a budget checked inside a batch can stop on time."""
    import random

    from model.text.data import write_corpus

    rng = random.Random(0)
    alphabet = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"

    def line(n):
        return "".join(rng.choice(alphabet) for _ in range(n))

    splits = {
        "train": [line(line_chars) for _ in range(8)],
        "valid": [line(300)] * 4,
        "test": [line(300)] * 4,
    }
    write_corpus(path, splits, {"name": "long lines"})
    return path


def test_max_minutes_holds_inside_a_batch_and_leaves_a_complete_checkpoint(tmp_path, capsys):
    import time

    corpus = long_line_corpus(tmp_path / "corpus")
    out = tmp_path / "m"
    budget_s = 0.02 * 60
    start = time.monotonic()
    code = main(
        [
            "train",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--run-dir",
            str(tmp_path / "run"),
            *TINY,
            "--bptt",
            "4",
            "--epochs",
            "100",
            "--patience",
            "1000",
            "--max-minutes",
            "0.02",
        ]
    )
    wall = time.monotonic() - start
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # Unbounded, this run is 100 epochs of 10,000 steps (hours); its first batch alone is 10,000.
    assert metrics["stopped_by"] == "budget"
    assert 0 < metrics["total_steps"] < 10_000  # stopped inside the first batch
    assert wall < budget_s + 15, wall  # generous: setup, a loaded machine; not minutes
    assert metrics["train_time_s"] <= budget_s
    # the checkpoint on disk is complete: test figures, and a card that has them
    assert metrics["test"]["tokens"] > 0 and metrics["valid"]["tokens"] > 0
    card = (out / CARD).read_text(encoding="utf-8")
    assert f"{metrics['test']['perplexity']:.2f}" in card
    assert "time budget" in capsys.readouterr().out


def test_every_checkpoint_has_its_card_before_the_final_evaluation(tiny_corpus, tmp_path, capsys):
    """A run killed mid-way leaves a described checkpoint: the card is written with every save."""
    job = TrainJob(
        data_dir=str(tiny_corpus),
        out_dir=str(tmp_path / "m"),
        run_dir=str(tmp_path / "run"),
        model={"emb_dim": 8, "hidden_dim": 8},
        train=TrainConfig(epochs=1, batch_size=8, bptt=6, warmup_steps=1),
    )
    trainer = Trainer(job, torch.device("cpu"), progress_bar=False)
    assert trainer.run() == "epochs"  # no final evaluation yet: only validations and saves
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert "test" not in metrics and metrics["valid"]["tokens"] > 0
    assert "| test | n/a |" in (tmp_path / "m" / CARD).read_text(encoding="utf-8")


def test_ctrl_c_ends_with_a_complete_checkpoint(tiny_corpus, tmp_path, monkeypatch, capsys):
    from model.training import train

    calls = {"n": 0}
    real_step = train.Trainer.step

    def step_then_interrupt(self, *args):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(train.Trainer, "step", step_then_interrupt)
    out = tmp_path / "m"
    args = ["train", "--data", str(tiny_corpus), "--out", str(out), "--run-dir", str(tmp_path / "r"), *TINY]
    assert main([*args, "--epochs", "50"]) == 130
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by"] == "interrupted" and metrics["test"]["tokens"] > 0
    assert (out / CARD).is_file()


@pytest.mark.parametrize(
    "minutes,s_per_token,final_tokens,training_s",
    [
        (1.0, 0.0, 1000, 60 - TimeBudget.SLACK_S),  # nothing measured yet: only the slack
        (1.0, 0.01, 1000, 60 - (10 * TimeBudget.MARGIN + TimeBudget.SLACK_S)),
        (1.0, 0.1, 1000, 0.0),  # the evaluation alone takes more than the budget
        (0.0, 0.1, 1000, 0.0),  # no budget: nothing reserved, never out of time
    ],
)
def test_time_budget_keeps_the_measured_final_evaluation(minutes, s_per_token, final_tokens, training_s):
    budget = TimeBudget(minutes, final_tokens)
    budget.measured(s_per_token * 500, 500)
    assert budget.training_s() == pytest.approx(training_s)
    if minutes == 0:
        assert not budget.out_of_time() and budget.fraction() == 0.0 and budget.too_small() is None
    elif training_s == 0:
        assert budget.out_of_time() and "no time is left to train" in (budget.too_small() or "")
    else:
        assert not budget.out_of_time() and budget.too_small() is None
