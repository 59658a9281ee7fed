#!/usr/bin/env bash
# Create the separate virtualenv the peer benchmark runs in (glances, nvitop, gpustat),
# so the peers' dependencies never touch the project's .venv.
#   bench/peers/setup.sh [VENV_PATH]     (default: <repo>/.bench-venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.bench-venv}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet glances nvitop gpustat nvidia-ml-py psutil
"$VENV/bin/pip" list 2>/dev/null | grep -i -E '^(glances|nvitop|gpustat|nvidia-ml-py|psutil) '
echo "peers venv ready: $VENV"
