#!/usr/bin/env bash
# Installs into .venv, then runs every check: lint, format, import contracts, module sizes, generated code and API
# reference freshness, buf breaking, buf lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Debian's Chromium for the page tests (never a browser download) and Debian's ffmpeg, an independent HLS client.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v ffmpeg >/dev/null 2>&1 || missing="$missing ffmpeg"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "missing:$missing: install Debian's packages (sudo apt-get install$missing)" >&2
    exit 1
  fi
fi
(cd web && npm test --silent)
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm test --silent)
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Boundaries (the import contracts in pyproject.toml) and module sizes (no hand-written module over 400 lines).
.venv/bin/lint-imports --no-cache --no-logo
.venv/bin/python scripts/module_sizes.py
.venv/bin/python protos/generate.py --check
# The API: nothing that breaks the last release (protos/avatar-v1.binpb, see protos/README.md; buf comes from the
# page's npm ci in install.sh), and the reference docs/api.md generated from the .proto comments is fresh.
web/node_modules/.bin/buf breaking protos --against protos/avatar-v1.binpb
.venv/bin/python protos/reference.py --check
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
