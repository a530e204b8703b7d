# syntax=docker/dockerfile:1
# HTTP API image: FastAPI + uvicorn. Specs are validated with timm (which imports torch), but no model ever runs
# here on a GPU, so the image carries the CPU-only torch wheels (under 1 GB installed, instead of several GB with CUDA).
#   docker build -f docker/api.Dockerfile -t learngene/api .
FROM python:3.11.13-slim-bookworm AS builder
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: the project's `torch>=2.4` requirement is then already satisfied.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY learngene/ learngene/
COPY service/ service/
COPY jobs/ jobs/
COPY workers/ workers/
COPY templates_store/ templates_store/
# A regular (non-editable) install: the package data learngene/assets/demo/* goes into site-packages with the code.
RUN pip install --no-cache-dir '.[service]' \
    && python -c "import importlib.resources as r; assert r.files('learngene').joinpath('assets/demo/manifest.json').is_file()"

FROM python:3.11.13-slim-bookworm
RUN groupadd --system --gid 10001 learngene \
    && useradd --system --uid 10001 --gid learngene --home-dir /home/learngene --create-home --shell /usr/sbin/nologin learngene \
    && mkdir -p /data/store /data/artifacts /data/work \
    && chown -R learngene:learngene /data
COPY --from=builder /opt/venv /opt/venv
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    LEARNGENE_STORE=/data/store \
    LEARNGENE_ARTIFACTS=/data/artifacts \
    LEARNGENE_WORK_DIR=/data/work
WORKDIR /home/learngene
# Numeric, so that runtimes enforcing runAsNonRoot (Kubernetes) can verify it: 10001 is `learngene`.
USER 10001:10001
EXPOSE 8000
# Slim images have no curl: probe /healthz with the standard library (urlopen raises on a non-2xx answer).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["learngene", "serve", "--host", "0.0.0.0", "--port", "8000"]
