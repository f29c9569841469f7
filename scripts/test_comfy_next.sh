#!/usr/bin/env bash
# The pack's ComfyUI tests (in-process and headless server) on the newer ComfyUI 0.33.0, after test.sh ran them
# on 0.3.75. ComfyUI 0.33.0 is not on any package index: its source tree comes from ../shared/comfyui/ (CI has
# it); where that is absent (a user's machine) this run is skipped with a message.
#
# Its requirements clash with 0.3.75's (frontend, templates, comfy-kitchen, comfy-aimdo, torchaudio), so it gets
# its own venv, .venv-comfy-next. That venv is an overlay: a .pth file puts .venv-test's site-packages behind its
# own, so torch and everything else the two share is not installed twice (about 100 MB instead of 6 GB, and under
# a minute); pip never touches .venv-test ("outside environment"). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${ANODIFF_TEST_VENV:-.venv-test}
VENV=${ANODIFF_NEXT_VENV:-.venv-comfy-next}
TARBALL=${ANODIFF_COMFYUI_NEXT_TARBALL:-../shared/comfyui/ComfyUI-0.33.0.tar.gz}
TREE=${ANODIFF_COMFYUI_NEXT_DIR:-.cache/comfyui-0.33.0/ComfyUI}
PY=${PYTHON:-python3}

if [ ! -f "$TREE/main.py" ] && [ ! -f "$TARBALL" ]; then
    echo "[test_comfy_next] SKIPPED: no ComfyUI 0.33.0 ($TARBALL is absent); only ComfyUI 0.3.75 was tested"
    exit 0
fi
if [ ! -f "$BASE/.complete" ]; then
    echo "[test_comfy_next] $BASE is not built; run scripts/test.sh first" >&2
    exit 1
fi
if [ ! -f "$TREE/main.py" ]; then  # the tarball unpacks to one folder, ComfyUI/
    mkdir -p "$(dirname "$TREE")"
    tar -xzf "$TARBALL" -C "$(dirname "$TREE")"
fi

if [ ! -f "$VENV/.complete" ] || [ "$TREE/requirements.txt" -nt "$VENV/.complete" ]; then
    echo "[test_comfy_next] creating $VENV over $BASE (first run: under a minute)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    base_site=$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    base_site=$(cd "$base_site" && pwd)
    echo "$base_site" > "$site/zz_anodiff_base_venv.pth"  # after the venv's own packages, so those win
    # .venv-test's editable install of this package (a .pth) is not read from an added directory: add it again.
    echo "$(pwd)" > "$site/anodiff_repo.pth"
    grep -viE '^\s*(torch|torchvision|torchaudio)\b' "$TREE/requirements.txt" > "$VENV/comfyui-requirements.txt"
    # torchaudio: 0.33.0 imports it at start-up; 2.11 imports beside torch 2.14.1 (../shared/comfyui/README.md).
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$VENV/comfyui-requirements.txt" requests torchaudio \
        torch==2.14.1 torchvision==0.29.1
    touch "$VENV/.complete"
fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ANODIFF_COMFYUI=$(cd "$TREE" && pwd)
export ANODIFF_COMFYUI
echo "[test_comfy_next] the pack's ComfyUI tests on ComfyUI 0.33.0 ($ANODIFF_COMFYUI)"
exec "$VENV/bin/python" -m pytest tests/comfy "$@"
