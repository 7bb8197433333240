"""`rnnlm train` under torchrun: two CPU processes (gloo) sharing each global batch train the same
parameters as one process with that batch, and a two-process run resumes where it stopped.

Dropout 0 and unk_replace 0 make both runs deterministic (dropout masks differ by rank by design).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.models.checkpoint import load_rnn
from rnnlm.cli import main

REPO = Path(__file__).resolve().parents[2]

# 30 sentences in global batches of 7 (the last one 2): the two ranks hold 4 and 3 rows, with
# different token counts, and the 6-token BPTT windows cut most sentences in two or three.
TINY = [
    "--emb-dim",
    "16",
    "--hidden-dim",
    "16",
    "--batch-size",
    "7",
    "--bptt",
    "6",
    "--eval-every",
    "0",
    "--warmup-steps",
    "1",
    "--lr",
    "0.01",
    "--dropout",
    "0",
    "--unk-replace",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_args(corpus: Path, out: Path, run: Path, epochs: int) -> list[str]:
    return [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--run-dir",
        str(run),
        "--epochs",
        str(epochs),
        *TINY,
    ]


def torchrun(args: list[str]) -> str:
    """`torchrun --nproc-per-node 2 -m rnnlm.cli <args>` on 127.0.0.1; its stdout (all output on failure)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "rnnlm.cli",
        *args,
    ]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 120 s\nstdout:\n{e.stdout!r}\nstderr:\n{e.stderr!r}")
    assert done.returncode == 0, (
        f"torchrun exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    )
    return done.stdout


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_same_tensors(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor]) -> None:
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(
            two[name], one[name], rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.fixture(scope="module")
def first_epoch(tiny_corpus, tmp_path_factory) -> Path:
    """One epoch (10 steps) by two processes and by one, each with its checkpoint and run dir."""
    root = tmp_path_factory.mktemp("ddp")
    stdout = torchrun(train_args(tiny_corpus, root / "two", root / "two-run", epochs=1))
    printed = stdout[stdout.index('{\n  "valid"') :]  # the figures, printed by rank 0 alone
    assert json.loads(printed)["test"]["tokens"] > 0
    assert main(train_args(tiny_corpus, root / "one", root / "one-run", epochs=1)) == 0
    return root


def test_two_processes_train_what_one_process_trains_with_the_same_global_batch(first_epoch, capsys):
    capsys.readouterr()
    one_net, _, one_metrics = load_rnn(first_epoch / "one")
    two_net, _, two_metrics = load_rnn(first_epoch / "two")
    assert one_metrics["total_steps"] == two_metrics["total_steps"] == 10
    assert two_metrics["tokens_seen"] == one_metrics["tokens_seen"]  # global tokens, counted once
    assert two_metrics["hardware"]["world_size"] == 2
    assert_same_tensors(one_net.state_dict(), two_net.state_dict())
    assert two_metrics["valid"]["perplexity"] == pytest.approx(one_metrics["valid"]["perplexity"], rel=1e-5)

    log = log_records(first_epoch / "two-run")  # one writer: one start record, not two
    assert [r["event"] for r in log] == ["start", "valid"]
    assert log[0]["world_size"] == 2 and log[1]["world_size"] == 2


def test_a_two_process_run_resumes_where_it_stopped(first_epoch, tiny_corpus, tmp_path, capsys):
    for name in ("one", "one-run", "two", "two-run"):
        shutil.copytree(first_epoch / name, tmp_path / name)
    stdout = torchrun(train_args(tiny_corpus, tmp_path / "two", tmp_path / "two-run", epochs=2))
    assert stdout.count("resumed from") == 1 and "at step 10" in stdout
    assert main(train_args(tiny_corpus, tmp_path / "one", tmp_path / "one-run", epochs=2)) == 0
    capsys.readouterr()

    def resume_state(run: Path) -> dict:
        return torch.load(run / "state.pt", weights_only=True)

    one, two = resume_state(tmp_path / "one-run"), resume_state(tmp_path / "two-run")
    assert json.loads(two["progress"])["step"] == 20
    assert_same_tensors(one["model"], two["model"])
    starts = [r for r in log_records(tmp_path / "two-run") if r["event"] == "start"]
    assert [(r["step"], r["world_size"]) for r in starts] == [(0, 2), (10, 2)]
