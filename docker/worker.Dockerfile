# syntax=docker/dockerfile:1
# GPU worker image: Celery worker consuming the `inherit` and `condense` queues, one job at a time.
# A slim Python base and PyPI's Linux build of torch: its nvidia-* / cuda-* wheels carry the CUDA runtime, cuDNN,
# NCCL and the rest, so the image holds CUDA once (a CUDA base image would add a second copy that torch never loads).
# The host needs the NVIDIA driver (new enough for the CUDA release the locked torch was built with: see the
# cuda-toolkit pin in requirements.lock) and the NVIDIA container toolkit, which mounts the driver's libcuda into the
# container (docker run --gpus / a compose GPU reservation).
# Every version comes from requirements.lock (`make lock`), as in `make install` and the API image.
#   docker build -f docker/worker.Dockerfile -t learngene/worker .
FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY learngene/ learngene/
COPY service/ service/
COPY jobs/ jobs/
COPY workers/ workers/
COPY templates_store/ templates_store/
COPY storage/ storage/
# A regular (non-editable) install: the package data learngene/assets/demo/* goes into site-packages with the code.
RUN pip install --no-cache-dir -c requirements.lock '.[worker]' \
    && pip check \
    && python -c "import importlib.metadata as m; assert m.version('nvidia-cudnn-cu13') and m.version('nvidia-nccl-cu13')" \
    && python -c "import importlib.resources as r; assert r.files('learngene').joinpath('assets/demo/manifest.json').is_file()"

FROM python:3.11.13-slim-bookworm
RUN groupadd --system --gid 10001 learngene \
    && useradd --system --uid 10001 --gid learngene --home-dir /home/learngene --create-home --shell /usr/sbin/nologin learngene \
    && mkdir -p /data/store /data/artifacts /data/work \
    && chown -R learngene:learngene /data
COPY --from=builder /opt/venv /opt/venv
# NVIDIA_DRIVER_CAPABILITIES: which parts of the host's driver the NVIDIA container toolkit mounts into a container
#   given GPUs: CUDA (compute) and NVML / nvidia-smi (utility). NVIDIA_VISIBLE_DEVICES is deliberately not set (CUDA
#   base images set it to `all`, which on a host whose default runtime is nvidia hands every GPU to every container):
#   the GPUs are the ones the container is given (compose's device_ids per service, docker run --gpus).
# PYTORCH_NVML_BASED_CUDA_CHECK: torch.cuda.is_available() in the Celery parent asks NVML instead of initializing
#   CUDA, so the prefork pool's children fork from a process without a CUDA context.
# REMAP_SIGTERM=SIGQUIT: Celery treats SIGTERM (docker stop) as the start of its soft shutdown: running jobs get
#   LEARNGENE_WORKER_SOFT_SHUTDOWN_S seconds (default 120) to finish, then are requeued. The container's stop
#   timeout (compose stop_grace_period) must be longer than that.
# LEARNGENE_WORKER_HEARTBEAT_FILE: the worker's main process touches it every few seconds (workers/heartbeat.py);
#   the HEALTHCHECK below reads its age.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTORCH_NVML_BASED_CUDA_CHECK=1 \
    REMAP_SIGTERM=SIGQUIT \
    LEARNGENE_STORE=/data/store \
    LEARNGENE_ARTIFACTS=/data/artifacts \
    LEARNGENE_WORK_DIR=/data/work \
    LEARNGENE_WORKER_SOFT_SHUTDOWN_S=120 \
    LEARNGENE_WORKER_HEARTBEAT_FILE=/tmp/learngene-worker.heartbeat
WORKDIR /home/learngene
# Numeric, so that runtimes enforcing runAsNonRoot (Kubernetes) can verify it: 10001 is `learngene`.
USER 10001:10001
# Cheap: a Python start-up and a stat() of the heartbeat file (no Celery client, no broker round trip). Beats come
# every 5 s; 30 s without one means the worker's main process is stopped, hung or gone.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "workers.heartbeat", "--max-age", "30"]
CMD ["learngene", "worker", "--queues", "inherit,condense", "--concurrency", "1"]
