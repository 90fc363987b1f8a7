#!/usr/bin/env bash
# Installs into .venv, then runs every check: lint, format, generated code freshness, buf lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python protos/generate.py --check
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
