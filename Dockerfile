# syntax=docker/dockerfile:1
# rnnlm: the language-model service with the shipped weights.
#
#   docker build -t rnnlm .                                   # CPU-only PyTorch (default)
#   docker build --build-arg TORCH_VARIANT=cu126 -t rnnlm:cuda .   # CUDA PyTorch (run with --gpus all)
#   docker run -p 8000:8000 rnnlm
#
# Settings come from RNNLM_* variables (see docs/API.md), e.g. -e RNNLM_DEVICE=cpu.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu | cu126 | cu128 ...: which PyTorch wheel index to install torch from
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RNNLM_MODEL_DIRS=/app/weights/pd98-char-lstm \
    RNNLM_DEVICE=auto

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes, not with the code.
COPY pyproject.toml ./
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The code, then the project itself (its dependencies are already in place).
COPY README.md ./
COPY model ./model
COPY service ./service
COPY rnnlm ./rnnlm
RUN pip install --no-cache-dir --no-deps .

# The trained checkpoints (config, safetensors weights, vocabulary, metrics, model card), readable
# by the unprivileged user whatever their modes in the build context (a checkpoint written
# locally is private to its owner).
COPY --chmod=755 weights ./weights

# Run as an unprivileged user (numeric, so the runtime needs no passwd lookup).
RUN groupadd --gid 10001 rnnlm && useradd --create-home --uid 10001 --gid 10001 rnnlm
USER 10001:10001

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["rnnlm", "serve", "--host", "0.0.0.0", "--port", "8000"]
