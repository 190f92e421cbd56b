#!/usr/bin/env bash
# Developer build: compile dbdetect._native into src/dbdetect/ so that
# `PYTHONPATH=src python -m pytest` runs against the working tree.
# Users and CI install with `pip install .` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BUILD=${BUILD_DIR:-build/inplace}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null
cmake --build "$BUILD" -j2
