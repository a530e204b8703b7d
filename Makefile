# One place for the project's commands; README and CI call these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every package of every extra pinned (made by `make lock`): installs here, in CI and in both images take it as
# pip's constraints file, so they all get the same versions.
LOCK   := requirements.lock

.PHONY: install lock tools test test-fast test-full lint docs format run init-demo worker demo-templates validate-docker bench bench-quick clean

install: $(STAMP)

# Reinstall only when the dependency list or the lock changes; an existing venv is reused.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[service,worker,dev,docs]'
	touch $(STAMP)

# Regenerate requirements.lock after editing the dependencies in pyproject.toml (tests/unit/test_lock.py fails until
# then): a universal resolution (every platform and Python the project supports) from PyPI, of the core and every
# extra. Versions already in the lock are kept where they still fit; `make lock LOCK_FLAGS=--upgrade` takes the
# newest. The lock must install wherever `make install` runs: on a machine whose pip is capped by a constraints file
# (here /etc/xdg/pip/constraints.txt: torch and torchvision no newer than the releases on its disk), the lock is
# compiled under the same cap. uv comes with the dev extra, or is installed into the venv here.
LOCK_CONSTRAINTS ?= $(wildcard /etc/xdg/pip/constraints.txt)
LOCK_FLAGS       ?=
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --quiet --output-file $(LOCK) \
	  --custom-compile-command 'make lock' \
	  $(addprefix --constraint ,$(LOCK_CONSTRAINTS)) $(LOCK_FLAGS)

# System tools the tests use beyond Python packages: docker-compose validates docker-compose.yml statically; the web
# UI's test drives Debian's chromium (Playwright cannot download a browser here) and injects npm's axe-core
# (tests/browser/package-lock.json pins it).
tools:
	@command -v docker-compose >/dev/null || apt-get install -y -q docker-compose >/dev/null \
	  || { echo "install docker-compose (apt-get install docker-compose) to validate docker-compose.yml" >&2; exit 1; }
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
	  || { echo "install chromium (apt-get install chromium) for tests/service/test_ui.py" >&2; exit 1; }
	@test -f tests/browser/node_modules/axe-core/axe.min.js || npm ci --silent --prefix tests/browser \
	  || { echo "install Node.js and npm for tests/service/test_ui.py (axe-core)" >&2; exit 1; }

# The suite on xdist workers: four keep the two cores busy while some of them wait on their servers and
# subprocesses. A module runs whole on one worker (its servers start once). TEST_ARGS adds pytest arguments.
TEST_WORKERS ?= 4
TEST_ARGS    ?=
test: install tools
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope $(TEST_ARGS)

# The inner loop: the unit tier only (no subprocess, no server of another process).
test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not service" $(TEST_ARGS)

# Every test at the full scale (the soak's 100 jobs, the fuzzers' full counts): CI runs `make test`.
test-full: install tools
	LEARNGENE_TEST_SCALE=full $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope $(TEST_ARGS)

# The static checks, the documentation site's build included (so CI builds it: .ci/run runs `make lint`).
lint: install docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The documentation site (mkdocs.yml, docs/) into build/site, offline: the pages generated from the code
# (docs/reference/, docs/architecture.md) must be fresh (`$(BIN)/python scripts/gen_docs.py` rewrites them), and
# mkdocs builds with --strict, so a broken link or anchor, or a page missing from the nav, fails it.
SITE := build/site
docs: install
	$(BIN)/python scripts/gen_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The service with its embedded defaults: the HTTP API on http://127.0.0.1:$(PORT), jobs run in-process,
# the bundled demo template set published into the store on first start. Ctrl-C stops it. Clients may name data
# under the default data folder and, for the README's example, ../shared/data. `make run PORT=8001`: another port
# (the CLI's remote commands find it with LEARNGENE_PORT=8001 or LEARNGENE_URL).
PORT ?= $(or $(LEARNGENE_PORT),8000)
run: install
	$(BIN)/learngene serve --host 127.0.0.1 --port $(PORT) --data-root ../shared/data

# The main job without a server: a 4-layer, 128-wide ViT from the demo template set, fitted on FashionMNIST.
init-demo: install
	$(BIN)/learngene init --templates demo@prod --model vit_tiny_patch16_224 \
	  --set depth=4 --set embed_dim=128 --set num_heads=2 --set img_size=28 --set patch_size=7 \
	  --set in_chans=1 --set num_classes=10 \
	  --calibration idx://../shared/data/FashionMNIST --max-samples 2000 --steps 100 \
	  --out out/vit-d4-w128.safetensors

# A Celery worker (needs LEARNGENE_REDIS_URL, e.g. redis://127.0.0.1:6379/0).
worker: install
	$(BIN)/learngene worker --queues inherit,condense --concurrency 1

# Rebuild the bundled demo template set from nothing (trains the ancestor, then condenses it).
demo-templates: install
	scripts/build_demo_templates.sh

validate-docker: install tools
	PATH=$(BIN):$$PATH docker/validate.sh

# Every benchmark, one after the other (under an hour on 2 CPU cores: the method comparison takes about 22 minutes,
# the soak about 12); each prints a table and writes its JSON
# under bench/results/; the method comparison also writes BENCHMARKS.md and its plots.
bench: install
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[bench]'
	$(BIN)/python bench/inheritance_smoke.py
	$(BIN)/python bench/learngene_benchmark.py
	$(BIN)/python bench/service_load.py
	$(BIN)/python bench/service_load.py --storage s3
	$(BIN)/python bench/storage_roundtrip.py
	$(BIN)/python bench/soak.py

# The method comparison at a development scale (a few minutes; writes *_quick files, not BENCHMARKS.md).
bench-quick: install
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[bench]'
	$(BIN)/python bench/learngene_benchmark.py --quick

clean:
	rm -rf out build .pytest_cache .ruff_cache
