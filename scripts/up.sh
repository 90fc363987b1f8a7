#!/usr/bin/env bash
# Installs into .venv and runs the whole stack locally on the offline defaults (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/infinitetalk up "$@"
