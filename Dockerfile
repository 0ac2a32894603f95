# syntax=docker/dockerfile:1
# One image for the whole team deployment: the API (`optibench serve --no-worker`), the workers
# (`optibench worker`) and the one-shot migration (`optibench db upgrade`). See docs/deployment.md.
#
#   docker build -t optibench:latest .                                  # CUDA build of torch
#   docker build -t optibench:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # CPU-only, much smaller
FROM python:3.11-slim

# torch comes first and pinned, from PyTorch's own index, so that `pip install .` never swaps the build
# (the Makefile does the same). The index must carry TORCH_VERSION: each torch release is published for a
# few CUDA versions only (cu124 stops at 2.6, for instance); pick one your hosts' NVIDIA driver supports.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Only what the package needs; the source is installed into site-packages and then removed, so the
# working directory holds nothing but the service's own files.
# (README.m[d]: the package's long description once the repository has one; a pattern may match nothing)
COPY pyproject.toml README.m[d] /tmp/src/
COPY analysis /tmp/src/analysis
COPY api /tmp/src/api
COPY services /tmp/src/services
COPY db /tmp/src/db
COPY engine /tmp/src/engine
COPY optibench /tmp/src/optibench
COPY worker /tmp/src/worker
RUN pip install /tmp/src \
    && python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH_VERSION}')" \
    && rm -rf /tmp/src

RUN useradd --create-home --uid 1000 --user-group optibench \
    && mkdir -p /app \
    && chown optibench:optibench /app
WORKDIR /app
USER optibench

# OPTIBENCH_DATA_DIR defaults to ./.optibench, i.e. /app/.optibench, writable by the user above.
ENV OPTIBENCH_HOST=0.0.0.0 \
    OPTIBENCH_PORT=8000
EXPOSE 8000

# Liveness of the API. The compose file turns it off for the worker and the migration, which share
# the image but serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPTIBENCH_PORT', '8000'), timeout=4)"

CMD ["optibench", "serve", "--no-worker"]
