"""RNNLM_PRECISION / RNNLM_MODEL_PRECISION / RNNLM_BATCH_INVARIANT: applied at startup, shown
by /models, refused with a clear message where they cannot apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from model.models.ngram.model import build_ngram
from model.models.ngram.store import save_ngram
from model.models.precision import bf16_supported
from model.text.tokenizer import Tokenizer
from service.app import create_app
from service.settings import Settings
from service.startup import StartupError, load_registry
from tests.conftest import TINY_LINES

needs_bf16 = pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bfloat16 products")


def architecture(client: TestClient) -> dict[str, dict]:
    return {m["name"]: m["architecture"] for m in client.get("/models").json()["models"]}


def test_the_defaults_are_fp32_and_batch_dependent(tiny_model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        arch = architecture(c)[tiny_model_dir.name]
    assert arch["precision"] == "fp32"
    assert arch["batch_invariant"] is False


@needs_bf16
def test_bf16_and_batch_invariance_apply_and_scores_stay_close(tiny_model_dir: Path) -> None:
    body = {"candidates": ["厨房里食油用完了", "厨房里石油用完了"], "per_token": True}
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], device="cpu"))) as c:
        want = c.post("/score", json=body).json()["results"]
    settings = Settings(
        model_dirs=[str(tiny_model_dir)], device="cpu", precision="bf16", batch_invariant=True
    )
    with TestClient(create_app(settings)) as c:
        arch = architecture(c)[tiny_model_dir.name]
        got = c.post("/score", json=body).json()["results"]
    assert arch["precision"] == "bf16" and arch["batch_invariant"] is True
    for g, w in zip(got, want, strict=True):
        assert g["logprob"] != w["logprob"]  # bf16 products really ran
        assert g["logprob"] == pytest.approx(w["logprob"], abs=0.1)


@needs_bf16
def test_per_model_precision_overrides_the_global_one(tiny_model_dir: Path) -> None:
    settings = Settings(
        model_dirs=[str(tiny_model_dir)], device="cpu", model_precision={tiny_model_dir.name: "bf16"}
    )
    with TestClient(create_app(settings)) as c:
        assert architecture(c)[tiny_model_dir.name]["precision"] == "bf16"


def test_per_model_precision_from_the_environment(monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("RNNLM_MODEL_PRECISION", '{"tiny-lstm": "fp32"}')
    monkeypatch.setenv("RNNLM_PRECISION", "bf16")
    settings = Settings(model_dirs=[str(tiny_model_dir)], device="cpu")
    assert settings.model_precision == {"tiny-lstm": "fp32"} and settings.precision == "bf16"
    assert load_registry(settings).get(None).lm.describe()["precision"] == "fp32"


@pytest.mark.parametrize(
    "fields,name",
    [({"precision": "fp16"}, "precision"), ({"model_precision": {"tiny-lstm": "int8"}}, "model_precision")],
)
def test_an_unknown_precision_is_refused_naming_the_setting(
    tiny_model_dir: Path, fields: dict, name: str
) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(model_dirs=[str(tiny_model_dir)], device="cpu", **fields)


def test_a_per_model_precision_for_no_served_model_stops_the_start(tiny_model_dir: Path) -> None:
    settings = Settings(model_dirs=[str(tiny_model_dir)], device="cpu", model_precision={"nope": "fp32"})
    with pytest.raises(StartupError, match="RNNLM_MODEL_PRECISION names no served model: nope"):
        load_registry(settings)


@pytest.fixture(scope="module")
def ngram_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = Tokenizer.build(TINY_LINES, kind="char")
    return save_ngram(tmp_path_factory.mktemp("models") / "tiny-kn", build_ngram(tok, TINY_LINES, 3, "kn"))


def test_a_model_kind_without_bf16_keeps_fp32_globally_but_not_by_name(
    tiny_model_dir: Path, ngram_dir: Path
) -> None:
    dirs = [str(tiny_model_dir), str(ngram_dir)]
    registry = load_registry(Settings(model_dirs=dirs, device="cpu", batch_invariant=True))
    assert registry.get(ngram_dir.name).lm.describe()["precision"] == "fp32"
    assert registry.get(tiny_model_dir.name).lm.describe()["batch_invariant"] is True
    named = Settings(model_dirs=dirs, device="cpu", model_precision={ngram_dir.name: "bf16"})
    with pytest.raises(StartupError, match=f"model {ngram_dir.name}: precision 'bf16': ngram models"):
        load_registry(named)
