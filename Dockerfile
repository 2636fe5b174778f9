# syntax=docker/dockerfile:1.7
#
# Images for the model-serving project, one Dockerfile, three targets:
#
#   gateway     the ONNX Runtime gateway (`python -m service`); no torch. HTTP on 8000, gRPC on 8001.
#   gateway-torchserve  the same gateway plus torch and TorchServe's Python side (no Java):
#               TorchServe archives served with their own handlers (KServe `pytorch` runtime).
#   torchserve  TorchServe + torch + Java 17 + our handlers; archives are built from the
#               model store when the container starts.
#   train       the full training toolchain (`python -m training all --model-store /models`).
#
#   docker build --target gateway -t model-serving/gateway:gpu .                     # CUDA base
#   docker build --target gateway --build-arg RUNTIME=cpu -t model-serving/gateway:cpu .
#   docker build --target torchserve -t model-serving/torchserve .
#   docker build --target train -t model-serving/train .
#
# RUNTIME=gpu (default) builds the gateway on the CUDA + cuDNN runtime image with onnxruntime-gpu,
# so the CUDA provider works on GPU nodes; on a node without a GPU, ONNX Runtime falls back to
# the CPU provider. RUNTIME=cpu builds it on Debian bookworm (slim) with the CPU onnxruntime.
#
# Model store: mounted, not baked in. Every target reads (train writes) /models, a volume in
# compose and a PersistentVolumeClaim in Kubernetes. Models change on their own schedule (a
# retrain is not a code release), one image serves any store, and the image stays small.
#
# Python 3.11, the version the project is pinned and tested on:
#   - CPU gateway: Debian bookworm's own python3.11 package. No download outside the Debian
#     archive and PyPI, so the image also builds from a locally made Debian base
#     (`make image`, deploy/image.py) where no registry can be reached.
#   - GPU gateway, torchserve, train: CPython from python-build-standalone (installed by uv),
#     because the CUDA images are Ubuntu 24.04, whose own Python is 3.12.
#
# Install: the same `deploy/install.sh EXTRAS` that `make setup` runs, with constraints.txt,
# in a build stage; the runtime stage gets only the virtual environment (no compiler, no pip
# cache, no build tools). Start: tini as PID 1 forwards SIGTERM to `deploy/docker-entrypoint.sh`,
# which execs the server, so the gateway's graceful drain runs on `docker stop` and pod
# termination.

ARG RUNTIME=gpu
ARG PYTHON_VERSION=3.11.14
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG DEBIAN_IMAGE=debian:bookworm-20250811-slim
ARG UBUNTU_IMAGE=ubuntu:noble-20250619
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

FROM ${UV_IMAGE} AS uv

# ---- Python 3.11 from uv in /opt/python and an empty virtual environment in /opt/venv ----
FROM ${UBUNTU_IMAGE} AS python-uv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Package versions come from the dated base image's archive snapshot; pinning distribution
# package versions breaks the build whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ARG PYTHON_VERSION
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed
RUN uv python install "${PYTHON_VERSION}" \
    && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv

# ---- runtime bases: what differs between the CPU and GPU gateway ----
FROM ${DEBIAN_IMAGE} AS base-cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python3.11 without -dev, -venv or pip: the interpreter and its standard library only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
ENV GATEWAY_PROVIDERS='["CPUExecutionProvider"]'

FROM ${CUDA_IMAGE} AS base-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=python-uv /opt/python /opt/python
ENV GATEWAY_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]'

# ---- build environments: the runtime's Python with an empty /opt/venv ----
FROM base-cpu AS python-cpu
# python3.11-venv brings ensurepip (pip and setuptools wheels) for the build stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

FROM python-uv AS python-gpu

# ---- gateway ----
# hadolint ignore=DL3006
FROM python-${RUNTIME} AS gateway-build
ARG RUNTIME
# Optional: a pip.conf mounted for the build (deploy/image.py points it at this machine's index).
ARG PIP_CONFIG_FILE
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is only the package's long description (pyproject.toml `readme`): an empty one keeps
# edits of the docs from invalidating the install layer.
COPY pyproject.toml constraints.txt ./
COPY deploy/install.sh deploy/
COPY service/ service/
RUN --mount=type=cache,target=/root/.cache/pip touch README.md \
    && bash deploy/install.sh "${RUNTIME}"

# ---- gateway-torchserve: the gateway with TorchServe's Python side and torch, no Java ----
# It serves TorchServe archives with their own handlers (GATEWAY_BACKEND=torchserve-native): the
# image of the KServe `pytorch` runtime (deploy/kserve/). torch has a layer of its own, before
# the project, so a change to service/ does not reinstall it. TORCH is the CPU build from
# PyTorch's CPU index (the CUDA build on PyPI is several GB of CUDA libraries a CPU node never
# loads); deploy/image.py passes the CPU wheel this machine's pip holds.
# hadolint ignore=DL3006
FROM python-${RUNTIME} AS gateway-torchserve-build
ARG RUNTIME
ARG PIP_CONFIG_FILE
ARG TORCH=torch==2.14.1+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY deploy/install.sh deploy/
RUN --mount=type=cache,target=/root/.cache/pip bash deploy/install.sh --torch "${TORCH}" "${TORCH_INDEX_URL}"
COPY service/ service/
RUN --mount=type=cache,target=/root/.cache/pip touch README.md \
    && KEEP_TORCH=1 bash deploy/install.sh "${RUNTIME},torchserve"

# ---- what every gateway image runs with, but its virtual environment ----
# hadolint ignore=DL3006
FROM base-${RUNTIME} AS gateway-runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 /models
COPY deploy/docker-entrypoint.sh deploy/healthcheck.py /opt/app/
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_STORE=/models \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_GRPC_PORT=8001
WORKDIR /home/app
USER 10001:10001
# 8000: HTTP (V2 REST, /predictions, V1, /metrics); 8001: Open Inference Protocol over gRPC,
# with grpc.health.v1 and server reflection.
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/app/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/app/docker-entrypoint.sh"]
CMD ["gateway"]

FROM gateway-runtime AS gateway
COPY --from=gateway-build /opt/venv /opt/venv

FROM gateway-runtime AS gateway-torchserve
COPY --from=gateway-torchserve-build /opt/venv /opt/venv

# ---- torch toolchain shared by torchserve and train (torch wheels carry their CUDA libraries) ----
FROM python-uv AS torch-build
ARG RUNTIME
ARG PIP_CONFIG_FILE
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY deploy/install.sh deploy/
COPY service/ service/
COPY training/ training/
COPY handlers/ handlers/
COPY deploy/__init__.py deploy/
COPY deploy/torchserve/ deploy/torchserve/
RUN --mount=type=cache,target=/root/.cache/pip bash deploy/install.sh "${RUNTIME},train,torchserve"

FROM ${UBUNTU_IMAGE} AS torch-runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 /models
COPY --from=torch-build /opt/python /opt/python
COPY --from=torch-build /opt/venv /opt/venv
COPY deploy/docker-entrypoint.sh deploy/healthcheck.py /opt/app/
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_STORE=/models
WORKDIR /home/app
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/app/docker-entrypoint.sh"]

# ---- torchserve ----
FROM torch-runtime AS torchserve
# config.properties (loopback addresses, token auth) and the per-model model-config files;
# the entrypoint derives the container's config from the former (see docker-entrypoint.sh).
COPY deploy/torchserve/ /opt/app/torchserve/
# TorchServe writes logs, its pid file, the archives and its config under /home/app and /tmp;
# in Kubernetes they are emptyDir mounts so the root filesystem can stay read-only. Workers run
# one OpenMP thread each (deploy/torchserve/config.properties says why).
ENV TS_BASE_CONFIG=/opt/app/torchserve/config.properties \
    TS_MODEL_CONFIG_DIR=/opt/app/torchserve/model-config \
    TS_ARCHIVES=/home/app/model-archives \
    LOG_LOCATION=/home/app/logs \
    METRICS_LOCATION=/home/app/logs \
    TEMP=/tmp \
    OMP_NUM_THREADS=1
USER 10001:10001
EXPOSE 8080 8081 8082
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/opt/app/healthcheck.py", "http://127.0.0.1:8080/ping"]
CMD ["torchserve"]

# ---- train ----
FROM torch-runtime AS train
USER 10001:10001
# A batch job: it exits when training is done, there is nothing to probe.
HEALTHCHECK NONE
CMD ["train"]
