"""docker-compose.yml, deploy/prometheus.yml and the Grafana dashboard, checked without an engine.

The compose file must name files that exist and agree with the image (port, scrape target); every
metric a dashboard query names must be one the service really exports on /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "rnnlm.json"
METRIC = re.compile(r"\brnnlm_[a-z0-9_]+\b")
# what the dashboard must show, each by the metric that measures it
TOPICS = {
    "request rate": "rnnlm_requests_total",
    "latency": "rnnlm_request_duration_seconds_bucket",
    "batch size": "rnnlm_batch_requests_sum",
    "queue wait": "rnnlm_queue_wait_seconds_bucket",
    "admission refusals": "rnnlm_rejected_total",
}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


@pytest.fixture(scope="module")
def exported(tiny_model_dir) -> set[str]:
    """Every series name the service's /metrics offers, after a little traffic."""
    settings = Settings(model_dirs=[str(tiny_model_dir)], device="cpu")
    with TestClient(create_app(settings)) as client:
        assert client.post("/score", json={"candidates": ["ab", "ba"]}).status_code == 200
        assert (
            client.post("/generate", json={"prompt": "a", "max_new_tokens": 3, "seed": 0}).status_code == 200
        )
        text = client.get("/metrics").text
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    # a labelled metric with no sample yet shows only its TYPE line: add the series it will have
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name.removesuffix("_total") + s for s in suffixes.get(kind, [""])}
    return names


def test_dashboard_queries_name_only_exported_metrics(exported):
    queries = dashboard_queries()
    used = {name for expr in queries for name in METRIC.findall(expr)}
    assert used, "the dashboard queries no rnnlm metric"
    missing = sorted(used - exported)
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"
    for topic, metric in TOPICS.items():
        assert metric in used, f"the dashboard has no panel for {topic} ({metric})"


def test_dashboard_is_valid_grafana_json():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"  # the provisioned data source
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])
        for expr in (t["expr"] for t in panel["targets"]):
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_compose_service_prometheus_grafana():
    services = compose()["services"]
    assert {"rnnlm", "prometheus", "grafana"} <= set(services)
    rnnlm = services["rnnlm"]
    assert rnnlm["build"] == "." and (REPO / "Dockerfile").exists()
    port = str(rnnlm["environment"]["RNNLM_PORT"])
    assert f"{port}:{port}" in rnnlm["ports"]
    for service in services.values():
        assert ":" in service.get("image", "x:y"), "images are pinned to a tag"
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            assert (REPO / host).exists(), f"docker-compose.yml mounts {host}, which does not exist"
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert any(DASHBOARD.samefile(REPO / host) for host in grafana.values())


def test_prometheus_scrapes_the_service():
    services = compose()["services"]
    [config] = [v.split(":")[0] for v in services["prometheus"]["volumes"] if "prometheus.yml" in v]
    scrape = yaml.safe_load((REPO / config).read_text(encoding="utf-8"))["scrape_configs"]
    [job] = [j for j in scrape if j["job_name"] == "rnnlm"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert f"rnnlm:{services['rnnlm']['environment']['RNNLM_PORT']}" in targets


def test_grafana_provisioning_points_at_the_compose_prometheus():
    root = REPO / "deploy" / "grafana" / "provisioning"
    [source] = yaml.safe_load((root / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((root / "dashboards" / "rnnlm.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
