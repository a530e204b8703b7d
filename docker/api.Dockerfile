# syntax=docker/dockerfile:1
# HTTP API image: FastAPI + uvicorn. Specs are validated with timm (which imports torch), but no model ever runs
# here on a GPU, so the image carries PyTorch's CPU-only build of torch and torchvision: no nvidia-*/cuda-* wheels.
# Every version comes from requirements.lock (`make lock`), as in `make install` and the worker image.
#   docker build -f docker/api.Dockerfile -t learngene/api .
FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# torch and torchvision first, from PyTorch's CPU index, at the lock's versions: the lock's `torch==X` admits the
# CPU build `X+cpu`, whose metadata requires no nvidia-*, cuda-* or triton package (PyPI's Linux build of X requires
# them). --no-deps: that index serves only these two; their own requirements (filelock, sympy, numpy, pillow, ...)
# come from PyPI in the next step, pinned by the lock like everything else.
RUN pip install --no-cache-dir --no-deps --index-url https://download.pytorch.org/whl/cpu \
        -c requirements.lock torch torchvision
COPY pyproject.toml README.md ./
COPY learngene/ learngene/
COPY service/ service/
COPY jobs/ jobs/
COPY workers/ workers/
COPY templates_store/ templates_store/
COPY storage/ storage/
# A regular (non-editable) install: the package data learngene/assets/demo/* goes into site-packages with the code.
# The installed CPU torch satisfies the lock's pin, so pip keeps it; the checks fail the build if a CUDA package
# slipped in or a requirement is missing.
RUN pip install --no-cache-dir -c requirements.lock '.[service]' \
    && pip check \
    && python -c "import importlib.metadata as m; cuda = sorted(d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].lower().startswith(('nvidia-', 'cuda-', 'triton'))); assert not cuda, cuda" \
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
# Readiness, not mere liveness: /readyz answers 200 only when Redis and the store answer (503 otherwise), so
# `depends_on: condition: service_healthy` and load balancers send traffic only to an API that can take it.
# Slim images have no curl: the standard library's urlopen raises on a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["learngene", "serve", "--host", "0.0.0.0", "--port", "8000"]
