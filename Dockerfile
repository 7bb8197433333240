# rnnlm: the language-model service with the shipped weights.
#
#   docker build -t rnnlm .                                   # CPU-only PyTorch (default)
#   docker build --build-arg TORCH_VARIANT=cu126 -t rnnlm:cuda .   # CUDA PyTorch (run with --gpus all)
#   docker run -p 8000:8000 rnnlm
#
# Settings come from RNNLM_* variables (see docs/API.md), e.g. -e RNNLM_DEVICE=cpu; the port is
# RNNLM_PORT (docker run -e RNNLM_PORT=9000 -p 9000:9000 rnnlm): the server, EXPOSE and the
# health check all read it. Every Python package is pinned by constraints.txt (`make lock`).
# deploy/image-test.sh builds and runs this image in CI (`make image-test`).
ARG PYTHON_VERSION=3.11
# any Debian-based image with python3 and pip on PATH as `python` and `pip`
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# The checkpoints with modes that do not depend on the build context's (a checkpoint written
# locally is private to its owner): directories 0755, files 0644, nothing executable.
FROM ${BASE_IMAGE} AS weights
COPY weights /weights
RUN find /weights -type d -exec chmod 0755 {} + && find /weights -type f -exec chmod 0644 {} +

FROM ${BASE_IMAGE}

# cpu | cu126 | cu128 ...: which PyTorch wheel index to install torch from
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# where torch comes from (a PEP 503 index); its dependencies and the rest come from PyPI, pinned
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RNNLM_MODEL_DIRS=/app/weights/pd98-char-lstm \
    RNNLM_DEVICE=auto \
    RNNLM_HOST=0.0.0.0 \
    RNNLM_PORT=8000

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt change.
COPY pyproject.toml constraints.txt ./
RUN pip install --no-cache-dir --no-deps "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The code, then the project itself (its dependencies are already in place).
COPY README.md ./
COPY model ./model
COPY service ./service
COPY rnnlm ./rnnlm
RUN pip install --no-cache-dir --no-deps .

# The trained checkpoints (config, safetensors weights, vocabulary, metrics, model card).
COPY --from=weights /weights ./weights

# Run as an unprivileged user (numeric, so the runtime needs no passwd lookup).
RUN groupadd --gid 10001 rnnlm && useradd --create-home --uid 10001 --gid 10001 rnnlm
USER 10001:10001

EXPOSE ${RNNLM_PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"RNNLM_PORT\"]}/health', timeout=4)"]

# host and port: RNNLM_HOST and RNNLM_PORT above
CMD ["rnnlm", "serve"]
