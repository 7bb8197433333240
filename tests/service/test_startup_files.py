"""weights/DEFAULT.json, the one file besides the checkpoints read at start-up, under the
checkpoint files' rules: a regular file (a FIFO or /dev/zero is refused at once, never read), of
bounded size, holding an object of the right shape. A choice the service cannot follow (a model
that is not there, a malformed `serve`) is one clear start-up error, never another model served
in its place."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.__main__ import serve
from service.app import create_app
from service.settings import Settings

HANG_S = 20  # far longer than any of these takes; past it the call is taken to hang


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working directory with an empty weights/ (weights/DEFAULT.json is relative to it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNLM_MODEL_DIRS", raising=False)
    (tmp_path / "weights").mkdir()
    return tmp_path


def choice_file() -> Path:
    return Path("weights") / "DEFAULT.json"


def write_choice(record: Any) -> None:
    choice_file().write_text(json.dumps(record), encoding="utf-8")


def finishes(call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``call`` in a daemon thread: (finished within HANG_S, its result or its exception)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as e:  # handed back to the test
            out.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_S)
    return (not worker.is_alive(), out[0] if out else None)


def settings_error(workdir: Path) -> str:
    """The one message Settings() gives for the recorded choice (it names the file)."""
    done, result = finishes(Settings)
    assert done, "reading weights/DEFAULT.json hung"
    assert isinstance(result, ValidationError), f"expected a settings error, got {result!r}"
    [err] = result.errors()
    assert err["loc"] == ("model_dirs",)
    message = str(err["msg"])
    assert "weights/DEFAULT.json" in message, message
    return message


def test_a_fifo_is_refused_at_once(workdir):
    os.mkfifo(choice_file())
    assert "not a regular file" in settings_error(workdir)


def test_dev_zero_is_refused_without_reading_it(workdir):
    choice_file().symlink_to("/dev/zero")
    assert "not a regular file" in settings_error(workdir)


def test_an_oversized_file_is_refused(workdir, tiny_model_dir):
    # a valid record, padded far past what `rnnlm benchmark choose-default` ever writes (~2 KB)
    write_choice({"serve": [str(tiny_model_dir)], "command": "x" * 300_000})
    message = settings_error(workdir)
    assert "bytes is more than the limit" in message


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ([1, 2], "must be a JSON object"),
        ({"default": "weights/a"}, "`serve`"),
        ({"serve": "weights/a"}, "`serve`"),
        ({"serve": []}, "`serve`"),
        ({"serve": ["weights/a", 3]}, "`serve.1`"),
        ({"serve": [""]}, "`serve.0`"),
    ],
)
def test_a_malformed_serve_is_an_error_not_the_fallback(workdir, record, says):
    (workdir / "weights" / "a").mkdir()
    write_choice(record)
    assert says in settings_error(workdir)


def test_not_json_is_an_error(workdir):
    choice_file().write_text("{not json", encoding="utf-8")
    assert "not valid JSON" in settings_error(workdir)


def test_a_missing_model_is_an_error_not_another_model(workdir, tiny_model_dir):
    write_choice({"default": "weights/gone", "serve": ["weights/gone", str(tiny_model_dir)]})
    message = settings_error(workdir)
    assert "weights/gone" in message and "does not exist" in message


def test_a_default_that_is_not_served_first_is_an_error(workdir, tiny_model_dir):
    write_choice({"default": "weights/other", "serve": [str(tiny_model_dir)]})
    assert "`default`" in settings_error(workdir)


def test_no_file_serves_the_fallback(workdir):
    assert Settings().model_dirs == ["weights/pd98-char-lstm"]


def test_rnnlm_serve_stops_with_one_line(workdir, tiny_model_dir, capsys):
    write_choice({"serve": ["weights/gone"]})
    done, status = finishes(serve)
    assert done and status == 2
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line.startswith("error: invalid settings: RNNLM_MODEL_DIRS: weights/DEFAULT.json") and "gone" in line
    )


def test_the_recorded_choice_is_served_and_shown(workdir, tiny_model_dir):
    record = {"default": str(tiny_model_dir), "serve": [str(tiny_model_dir)], "measured_on": "valid"}
    write_choice(record)
    settings = Settings()
    assert settings.model_dirs == [str(tiny_model_dir)]
    with TestClient(create_app(settings)) as c:
        assert c.get("/models").json()["default_choice"] == record


@pytest.mark.parametrize("kind", ["fifo", "not a choice of these models", "huge"])
def test_with_model_dirs_set_a_bad_or_unrelated_file_is_not_shown_and_never_blocks(
    workdir, tiny_model_dir, kind
):
    if kind == "fifo":
        os.mkfifo(choice_file())
    elif kind == "huge":  # a choice of exactly these models, padded: every GET /models returned it all
        write_choice({"serve": [str(tiny_model_dir)], "command": "x" * 2_000_000})
    else:
        write_choice({"serve": ["weights/pd98-char-hybrid"]})

    def start() -> tuple[int, dict]:
        with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
            r = c.get("/models")
            return c.get("/ready").status_code, r.json()

    done, result = finishes(start)
    assert done, "start-up hung on weights/DEFAULT.json"
    assert not isinstance(result, BaseException), result
    ready, models = result
    assert ready == 200 and models["default_choice"] is None
    assert [m["name"] for m in models["models"]] == [tiny_model_dir.name]
