#!/usr/bin/env bash
# The offline CPU demo (about 10 minutes on 2 cores, no pretrained weights): trains a tiny dual-branch model with
# and without SAIM on synthetic defects and writes contact sheets, an MVTec-style folder and metrics.json.
# Builds .venv-demo once (CPU torch 2.13.0, this package, tqdm). Arguments go to `anodiff demo`, e.g. --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ANODIFF_DEMO_VENV:-.venv-demo}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    echo "[demo.sh] creating $VENV (first run only)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . tqdm torch==2.13.0
    touch "$VENV/.complete"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # spinning OpenMP threads make a busy 2-core machine 10x slower
exec "$VENV/bin/python" -m anodiff.cli demo "$@"
