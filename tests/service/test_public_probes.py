"""With RNNLM_API_KEY set, the probes' routes (/health, /ready) answer without the key, as a
Kubernetes httpGet probe or a load balancer asks them, and reveal only whether the process is up
and the models are loaded: model names and load errors need the key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from model.models.checkpoint import WEIGHTS
from service.app import create_app
from service.auth import is_public
from service.settings import Settings

KEY = "probe-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], api_key=KEY))) as c:
        yield c


def test_health_and_ready_answer_without_the_key(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.head("/health").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}  # no model names without the key


def test_ready_with_the_key_names_the_models(client):
    r = client.get("/ready", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "ready", "models": ["tiny-lstm"]}
    # a wrong key is no key: the probe's answer, nothing more (and never a 401 for a probe)
    wrong = client.get("/ready", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 200 and wrong.json() == {"status": "ready"}


def test_everything_else_still_needs_the_key(client):
    for method, path in [("GET", "/models"), ("GET", "/metrics"), ("POST", "/score")]:
        assert client.request(method, path, json={"candidates": ["a"]}).status_code == 401, path
    spec = client.get("/openapi.json").json()
    assert "security" not in spec["paths"]["/ready"]["get"]
    assert spec["paths"]["/score"]["post"]["security"] == [{"bearer": []}]


def test_not_ready_says_why_only_with_the_key(tiny_model_dir, tmp_path):
    broken = tmp_path / "secret-model-name"
    shutil.copytree(tiny_model_dir, broken)
    (broken / WEIGHTS).write_bytes((broken / WEIGHTS).read_bytes()[:64])
    settings = Settings(model_dirs=[str(broken)], start_on_load_error=True, api_key=KEY)
    with TestClient(create_app(settings)) as c:
        anonymous = c.get("/ready")
        assert anonymous.status_code == 503 and anonymous.headers["retry-after"]
        assert anonymous.json()["error"]["type"] == "not_ready"
        assert "secret-model-name" not in anonymous.text and "sha256" not in anonymous.text
        keyed = c.get("/ready", headers=AUTH)
        assert keyed.status_code == 503 and "secret-model-name" in keyed.text and "sha256" in keyed.text


def test_not_ready_before_loading_without_the_key(tiny_model_dir):
    c = TestClient(create_app(Settings(model_dirs=[str(tiny_model_dir)], api_key=KEY)))  # no lifespan
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"


def probe_paths(doc: Any) -> list[str]:
    """Every httpGet path of every probe in a manifest."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key.endswith("Probe") and isinstance(value, dict) and "httpGet" in value:
                found.append(value["httpGet"]["path"])
            found += probe_paths(value)
    elif isinstance(doc, list):
        for item in doc:
            found += probe_paths(item)
    return found


def test_the_manifests_probes_need_no_key():
    paths = []
    for manifest in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text(encoding="utf-8")):
            paths += probe_paths(doc)
    assert {"/health", "/ready"} <= set(paths)
    assert all(is_public(p) for p in paths), paths
