#!/usr/bin/env bash
# The GPU check (README "GPU"): one table, at most about 8 minutes on one GPU, no downloads. Arguments go to
# bench/gpu_check.py (--small: small sizes anywhere). On a CPU it runs small sizes, which is what CI runs.
#
#   bench/gpu_check.sh --prepare   # on a machine with PyPI: wheels a bare GPU machine lacks -> .cache/gpu-wheels
#   bench/gpu_check.sh             # there: install those wheels into /tmp (if needed) and print the table
#
# The GPU machine this project may borrow has PyTorch, transformers, accelerate, peft, safetensors, opencv, einops,
# scipy, psutil and pyyaml, but no diffusers, torchsde or network; carry .cache/gpu-wheels and .cache/comfyui
# (ComfyUI's source, unpacked by scripts/fetch_assets.py; it also holds the SD1 tokenizer the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.cache/gpu-wheels
GPU_PYTHON=${GPU_PYTHON_VERSION:-3.12}

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$WHEELS"
    versions=$("$PY" - <<'PYEOF'
import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("diffusers", "torchsde", "trampoline", "importlib_metadata")))
PYEOF
)
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$WHEELS" $versions
    ls -la "$WHEELS"
    exit 0
fi

if ! "$PY" -c "import diffusers, torchsde" 2>/dev/null; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "[gpu_check] diffusers/torchsde missing and no wheels in $WHEELS: run bench/gpu_check.sh --prepare" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
        "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
