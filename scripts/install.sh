#!/usr/bin/env bash
# Installs everything the stack needs: Python packages into .venv at the repo root, and the built page (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# The client package (clients/python): the public API's generated code lives there only, and the server and the CLI
# import it (infinitetalk_live_client.avatar.v1). Editable, so its build writes the modules into the source tree
# (gitignored) from protos/; built here, without build isolation, by this venv's own pinned grpcio-tools and
# setuptools (both from the dev extra above: grpcio-tools requires setuptools>=77, the client's build needs as much).
.venv/bin/python -m pip install --quiet --no-build-isolation --no-deps -e clients/python
# Face landmark models for photo avatars: they ship inside the mediapipe wheel. Only the model files are used
# (mediapipe's Python package pins protobuf<5, which our generated code cannot use), hence --no-deps.
.venv/bin/python -m pip install --quiet --no-deps "mediapipe==0.10.14"
# The page: generated gRPC-Web client + Next.js static export into web/out (served by Envoy).
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
