"""Help that helps: every subcommand has a description in `rnnlm --help`, every option a meaning
(with its choices, unit and default), and `make help` prints real values."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from model.models.config import ModelConfig
from model.training.config import CHOICES, FIELD_HELP, TrainConfig
from rnnlm.cli import FROM_TOKENIZER, WINDOW_KEYS, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def every_parser(parser: argparse.ArgumentParser, prog: str = "rnnlm"):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_parser(sub, f"{prog} {name}")


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_subcommand_has_a_description(capsys):
    out = help_text(capsys)
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for choice in action._choices_actions:
        assert choice.help and len(choice.help) > 20, choice.dest
        assert choice.dest in out and choice.help.split()[0] in out


def test_every_option_of_every_subcommand_says_what_it_is():
    missing = [
        f"{prog} {action.option_strings or action.dest}"
        for prog, parser in every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    "command,cls,skip",
    [("train", ModelConfig, FROM_TOKENIZER), ("train", TrainConfig, ()), ("fit", TrainConfig, ())],
)
def test_config_options_carry_meaning_choices_and_default(command, cls, skip):
    parser = subparsers(build_parser())[command]
    options = {a.dest: a for a in parser._actions}
    for f in fields(cls):
        if f.name in skip:
            assert f.name not in options
            continue
        action = options[f.name]
        assert FIELD_HELP[cls][f.name] in action.help and "(default: " in action.help
        if f.name in CHOICES:
            assert list(action.choices) == list(CHOICES[f.name])
        if isinstance(f.default, bool):
            assert action.metavar == "{true,false}"


def test_units_are_in_the_help(capsys):
    train = " ".join(help_text(capsys, "train").split())
    assert "--max-minutes MINUTES" in train and "final valid and test evaluation included" in train
    assert "--cell {rnn_tanh,gru,lstm}" in train and "--optimizer {adamw,sgd}" in train
    assert "--eval-every STEPS optimizer steps between validations (0 = once per epoch)" in train
    fit = " ".join(help_text(capsys, "fit").split())
    assert "--max-minutes MINUTES wall-clock limit of the whole run in minutes" in fit
    assert "--eval-every-tokens TOKENS train tokens between validations" in fit
    assert "--kind {rnn,hybrid,window}" in fit and "--precision {bf16,fp32}" in fit


def test_help_covers_every_config_field():
    from model.models.window import WindowConfig

    for cls, helps in FIELD_HELP.items():
        assert set(helps) == {f.name for f in fields(cls)}, cls
    assert set(WINDOW_KEYS) == {f.name for f in fields(WindowConfig)} - set(FROM_TOKENIZER)


# -- make --------------------------------------------------------------------------------------
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="`make` is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True)


@needs_make
def test_make_help_prints_real_values():
    out = make("help").stdout
    assert "http://127.0.0.1:8000" in out and "$(" not in out
    assert "http://0.0.0.0:9000" in make("help", "HOST=0.0.0.0", "PORT=9000").stdout
    assert "weights/my-lstm" in out and "publish-lstm" in out


@needs_make
def test_make_train_writes_a_new_directory_with_the_shipped_recipe(tmp_path):
    done = make("-n", "train", f"TRAIN_OUT={tmp_path / 'mine'}", "TRAIN_MINUTES=5")
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.replace("\\\n", " ").split())
    assert f"rnnlm fit --data data/pd98 --out {tmp_path / 'mine'} --max-minutes 5" in command
    assert "--model hidden_dim=768" in command and "--model variational=true" in command
    assert "weights/pd98-char-lstm" not in command


@needs_make
def test_make_train_never_writes_over_a_model():
    done = make("-n", "train", "TRAIN_OUT=weights/pd98-char-lstm")
    assert done.returncode != 0
    assert "never writes over a model" in done.stderr
    assert "rnnlm fit" not in done.stdout


def test_pyproject_license_is_an_spdx_expression():
    """A TOML-table license makes setuptools warn (twice) on every install."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # PEP 639 support
