# syntax=docker/dockerfile:1
# GPU worker image: Celery worker consuming the `inherit` and `condense` queues, one job at a time.
# Needs the NVIDIA container toolkit on the host (docker run --gpus all / a compose GPU reservation).
#   docker build -f docker/worker.Dockerfile -t learngene/worker .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS builder
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CUDA 12.8 index: the project's `torch>=2.4` requirement is then already satisfied.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY learngene/ learngene/
COPY service/ service/
COPY jobs/ jobs/
COPY workers/ workers/
COPY templates_store/ templates_store/
RUN pip install --no-cache-dir '.[worker]' \
    && python -c "import importlib.resources as r; assert r.files('learngene').joinpath('assets/demo/manifest.json').is_file()"

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
# The venv's interpreter is a symlink to /usr/bin/python3: the runtime stage needs the same distribution python3.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 learngene \
    && useradd --system --uid 10001 --gid learngene --home-dir /home/learngene --create-home --shell /usr/sbin/nologin learngene \
    && mkdir -p /data/store /data/artifacts /data/work \
    && chown -R learngene:learngene /data
COPY --from=builder /opt/venv /opt/venv
# PYTORCH_NVML_BASED_CUDA_CHECK: torch.cuda.is_available() in the Celery parent asks NVML instead of initializing
#   CUDA, so the prefork pool's children fork from a process without a CUDA context.
# REMAP_SIGTERM=SIGQUIT: Celery treats SIGTERM (docker stop) as the start of its soft shutdown: running jobs get
#   LEARNGENE_WORKER_SOFT_SHUTDOWN_S seconds (default 120) to finish, then are requeued. The container's stop
#   timeout (compose stop_grace_period) must be longer than that.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTORCH_NVML_BASED_CUDA_CHECK=1 \
    REMAP_SIGTERM=SIGQUIT \
    LEARNGENE_STORE=/data/store \
    LEARNGENE_ARTIFACTS=/data/artifacts \
    LEARNGENE_WORK_DIR=/data/work \
    LEARNGENE_WORKER_SOFT_SHUTDOWN_S=120
WORKDIR /home/learngene
# Numeric, so that runtimes enforcing runAsNonRoot (Kubernetes) can verify it: 10001 is `learngene`.
USER 10001:10001
# Through a shell: $HOSTNAME (the container's hostname) names this worker's Celery node, celery@<hostname>.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A workers.main inspect ping -d \"celery@$HOSTNAME\" --timeout 10"]
CMD ["learngene", "worker", "--queues", "inherit,condense", "--concurrency", "1"]
