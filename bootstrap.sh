#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment in .venv and install the project into it.
# Used by the README's two commands and by CI. Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# PyTorch first, pinned to the CPU build this suite is tested with (a bare `torch` requirement can
# pull a multi-GB CUDA build). On a GPU machine, set TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0".
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,dask]"
if ! command -v chromium >/dev/null 2>&1; then
  echo "note: chromium is not installed, so tests/test_html.py (index.html in a headless browser) will be" \
       "skipped; install it with: apt-get install chromium (.ci/run does)" >&2
fi
