#!/usr/bin/env bash
# The container image, built and run: `make image-test` (CI runs it after `make test`).
#
#   build the image (Docker where a daemon answers, else buildah) -> start it (RNNLM_PORT=free port)
#   -> wait for /health -> POST /score and /generate -> the server runs as uid 10001, not root
#   -> the image keeps its HEALTHCHECK -> SIGTERM -> the container exits 0.
#
# Without a Docker daemon it uses podman and buildah (installed with apt-get where missing and
# allowed: root, or CI=true with sudo), on a Python base image made from Debian with debootstrap
# (the mirror apt uses), since no image registry may be reachable. That base is cached in
# .cache/image/ (gitignored) and in podman's storage, so a second run only rebuilds the image.
# torch comes from the local wheel directory pip uses here (find-links), when it has the pinned
# version; otherwise from the Dockerfile's default index. It skips, exit 0 with the reason, only
# where neither engine can run. IMAGE_TEST_REQUIRED=1 turns a skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/rnnlm:test}
BASE=localhost/rnnlm-base:bookworm-py3
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
CACHE=.cache/image
NAME=rnnlm-image-test-$$
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
START=$SECONDS

say() { echo "image-test: $*" >&2; }
skip() {
  if [ "${IMAGE_TEST_REQUIRED:-0}" = 1 ]; then say "FAILED (IMAGE_TEST_REQUIRED=1): $*"; exit 1; fi
  say "SKIPPED: $*"
  exit 0
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi; }

# -- the engine ------------------------------------------------------------------------------
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  need=()
  for tool in podman buildah runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    say "no Docker daemon; installing ${need[*]} with apt-get"
    (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       --no-install-recommends podman buildah runc debootstrap >/dev/null) || true
  fi
  for tool in podman buildah runc; do
    command -v "$tool" >/dev/null || skip "no Docker daemon answers and $tool is not installed (apt-get install podman buildah runc debootstrap)"
  done
  ENGINE=podman
  # crun and podman's default ulimits fail in unprivileged sandboxes; runc with cgroupfs works
  mkdir -p "$CACHE"
  # explicit limits: podman's defaults (and even this shell's own nproc) are refused here;
  # open files as this shell has them, 4096 processes (threads) are plenty for the server
  ULIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
  cat > "$CACHE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Sn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  CONTAINERS_CONF=$PWD/$CACHE/containers.conf
  export CONTAINERS_CONF
fi
say "engine: $ENGINE"

cleanup() {
  "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
WORK=$(mktemp -d)

# -- the build -------------------------------------------------------------------------------
if [ "$ENGINE" = docker ]; then
  docker build -t "$IMAGE" .
else
  if ! podman image exists "$BASE"; then
    tarball=$CACHE/base-bookworm-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar.gz
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null || skip "no base image and no debootstrap to make one"
      [ "$(id -u)" = 0 ] || skip "making the base image with debootstrap needs root"
      mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
      mirror=${mirror:-http://deb.debian.org/debian}
      say "making the base image: debootstrap bookworm from $mirror (cached in $tarball)"
      root=$WORK/root
      debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; say "FAILED: debootstrap"; exit 1; }
      rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      tar -C "$root" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
    fi
    podman import "$tarball" "$BASE" >/dev/null
  fi
  # torch from the local wheel directory when it holds the pinned version: a one-package index
  build_args=(--build-arg "BASE_IMAGE=$BASE")
  mounts=()
  for dir in ${TORCH_WHEELS:-} ${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true) /opt/wheels; do
    wheel=$(ls "$dir"/torch-"$TORCH_VERSION"[-+]*cp311*.whl 2>/dev/null | head -1) || true
    [ -n "$wheel" ] && break
  done
  if [ -n "${wheel:-}" ]; then
    say "torch from $wheel"
    mkdir -p "$WORK/index/torch"
    echo "<a href=\"file:///wheels/$(basename "$wheel")\">$(basename "$wheel")</a>" >"$WORK/index/torch/index.html"
    mounts+=(-v "$(dirname "$wheel"):/wheels:ro" -v "$WORK/index:/torch-index:ro")
    build_args+=(--build-arg "TORCH_INDEX=file:///torch-index")
  fi
  # the host's CA bundle, so pip trusts whatever TLS the host's network presents
  for ca in /etc/ssl/certs/ca-certificates.crt; do [ -s "$ca" ] && mounts+=(-v "$ca:$ca:ro"); done
  buildah bud --format docker --pull=never --network host --layers \
    "${ULIMITS[@]}" "${build_args[@]}" "${mounts[@]}" -t "$IMAGE" .
fi
say "built $IMAGE in $((SECONDS - START)) s"

# -- the run ---------------------------------------------------------------------------------
health=$("$ENGINE" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
case "$health" in *"/health"*) ;; *) say "FAILED: the image has no HEALTHCHECK (got $health)"; exit 1 ;; esac

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_args=()  # podman: no systemd here to time health checks; the image's check is run below
[ "$ENGINE" = podman ] && run_args+=(--no-healthcheck)
"$ENGINE" run -d --name "$NAME" "${run_args[@]}" --network host -e RNNLM_PORT="$port" -e RNNLM_DEVICE=cpu "$IMAGE" >/dev/null
url=http://127.0.0.1:$port
up=$SECONDS
until python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url/health" 2>/dev/null; do
  if [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$NAME")" != true ] || [ $((SECONDS - up)) -gt 120 ]; then
    "$ENGINE" logs "$NAME" >&2 || true
    say "FAILED: /health did not answer within 120 s"
    exit 1
  fi
  sleep 1
done
say "healthy $((SECONDS - up)) s after start"

python3 - "$url" <<'PY'
import json, sys, urllib.request

url = sys.argv[1]

def post(path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200, (path, r.status)
        return json.load(r)

score = post("/score", {"candidates": ["厨房里食油用完了", "厨房里石油用完了"]})
assert sorted(r["rank"] for r in score["results"]) == [1, 2], score
assert all(r["num_tokens"] > 0 and r["logprob"] < 0 for r in score["results"]), score
generated = post("/generate", {"prompt": "今天", "max_new_tokens": 10, "seed": 1})
assert generated["num_tokens"] > 0 and isinstance(generated["text"], str), generated
print("image-test: /score and /generate answered", file=sys.stderr)
PY

# the image's own HEALTHCHECK command, run once in the container (it must find RNNLM_PORT)
mapfile -t check < <(python3 -c 'import json, sys; [print(a) for a in json.loads(sys.argv[1])["Test"][1:]]' "$health")
"$ENGINE" exec "$NAME" "${check[@]}" || { say "FAILED: the HEALTHCHECK command fails in the container"; exit 1; }
say "HEALTHCHECK passes"

uid=$("$ENGINE" exec "$NAME" python -c 'import os; print(os.getuid())')
pid1=$("$ENGINE" exec "$NAME" sh -c 'cat /proc/1/cmdline | tr "\0" " "')
[ "$uid" != 0 ] || { say "FAILED: the server runs as root"; exit 1; }
say "the server ($pid1) runs as uid $uid"
executable=$("$ENGINE" exec "$NAME" find /app/weights -type f -perm /111)
[ -z "$executable" ] || { say "FAILED: executable files among the weights: $executable"; exit 1; }

"$ENGINE" kill --signal TERM "$NAME" >/dev/null
code=$(timeout 60 "$ENGINE" wait "$NAME") || { say "FAILED: no exit within 60 s of SIGTERM"; exit 1; }
if [ "$code" != 0 ]; then
  "$ENGINE" logs "$NAME" 2>&1 | tail -20 >&2
  say "FAILED: exit status $code after SIGTERM (want 0)"
  exit 1
fi
say "SIGTERM: clean exit 0; passed in $((SECONDS - START)) s"
