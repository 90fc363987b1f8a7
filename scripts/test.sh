#!/usr/bin/env bash
# Installs into .venv, then runs every check: lint, format, generated code freshness, buf lint and the tests.
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
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python protos/generate.py --check
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
