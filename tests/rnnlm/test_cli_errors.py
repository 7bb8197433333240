"""Every subcommand ends with one clear line on stderr, never a traceback, and an exit status
that says which kind of error: 2 for usage (an option or a value), 1 for a failure (a missing
checkpoint or corpus), as `rnnlm serve` does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnlm.cli import main


def run(args: list[str]) -> int:
    """The exit status of `rnnlm ARGS` (a parse error leaves through SystemExit, as argparse's do)."""
    try:
        return main(args)
    except SystemExit as e:
        assert isinstance(e.code, int)
        return e.code


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_missing_checkpoint_is_a_failure(tiny_corpus, capsys):
    assert run(["evaluate", "weights/nope", "--data", str(tiny_corpus)]) == 1
    assert "weights/nope" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["train", "fit", "evaluate", "train-ngram"])
def test_a_missing_corpus_is_a_failure_naming_data(command, tiny_model_dir, tmp_path, capsys):
    args = [str(tiny_model_dir)] if command == "evaluate" else ["--out", str(tmp_path / "out")]
    assert run([command, *args, "--data", "/nonexistent"]) == 1
    line = one_error_line(capsys)
    assert "--data /nonexistent" in line and "prepare-data" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra,named",
    [
        (["--dropout", "1.5"], "dropout"),
        (["--tie-weights", "maybe"], "--tie-weights"),
        (["--cell", "transformer"], "--cell"),
        (["--bogus", "1"], "--bogus"),
        (["--epochs", "many"], "--epochs"),
    ],
)
def test_train_usage_errors(extra, named, tiny_corpus, tmp_path, capsys):
    args = ["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "m"), *extra]
    assert run(args) == 2
    line = one_error_line(capsys)
    assert named in line and "rnnlm train --help" in line
    assert not (tmp_path / "m").exists()


def test_a_missing_required_option_is_one_line(capsys):
    assert run(["train", "--data", "x"]) == 2
    assert "--out" in one_error_line(capsys)


@pytest.mark.parametrize(
    "extra,named",
    [
        (["--model", "hidden_dim"], "KEY=VALUE"),
        (["--model", "hiden_dim=8"], "hiden_dim"),
        (["--model", "dropout=2"], "dropout"),
        (["--kind", "hybrid"], "--ngram-dir"),
        (["--max-minutes", "0"], "budget"),
        (["--precision", "fp8"], "--precision"),
    ],
)
def test_fit_usage_errors(extra, named, tiny_corpus, tmp_path, capsys):
    args = ["fit", "--data", str(tiny_corpus), "--out", str(tmp_path / "m"), *extra]
    assert run(args) == 2
    assert named in one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_benchmark_errors(tiny_model_dir, capsys):
    assert run(["benchmark", "rerank", "--model", str(tiny_model_dir)]) == 2
    assert "--items" in one_error_line(capsys)
    assert run(["benchmark", "rerank", "--model", str(tiny_model_dir), "--items", "/nonexistent.jsonl"]) == 1
    assert "/nonexistent.jsonl" in one_error_line(capsys)


def test_serve_names_the_flag_that_was_typed(capsys, monkeypatch):
    monkeypatch.delenv("RNNLM_PORT", raising=False)
    assert run(["serve", "--port", "99999"]) == 2
    line = one_error_line(capsys)
    assert "--port" in line and "RNNLM_PORT" not in line
    monkeypatch.setenv("RNNLM_PORT", "99999")  # from the environment: named as the variable
    assert run(["serve"]) == 2
    assert "RNNLM_PORT" in one_error_line(capsys)


def test_the_installed_command_prints_no_traceback(tiny_corpus):
    """The real process: one line on stderr, exit status 1."""
    done = subprocess.run(
        [sys.executable, "-m", "rnnlm.cli", "evaluate", "weights/nope", "--data", str(tiny_corpus)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: weights/nope: not a checkpoint directory (does not exist)"
    ]
