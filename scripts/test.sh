#!/usr/bin/env bash
# Installs into .venv, then runs every check: lint, format, generated code freshness, buf lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Debian's Chromium for the page tests (never a browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install Debian's chromium (sudo apt-get install chromium)" >&2
    exit 1
  fi
fi
(cd web && npm test --silent)
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python protos/generate.py --check
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
