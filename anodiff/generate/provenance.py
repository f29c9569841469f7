"""What a pair's sidecar records so that ``anodiff generate --from-sidecar`` can make the pair again: the files it
came from with their sha256 (base model, weight files, U²-Net-P, photo, BCM background), each region's exact shape
(COCO RLE of the region thresholded at 0.5 at the photo's size: all that crop and stitch read of it), and the settings
shared by the pairs of one run (``RUN_KEYS``), which a batch mate must share to be sampled with the pair again.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..common.assets import file_digest

RUN_KEYS = (
    "hashes",
    "weights_files",
    "base",
    "prompts",
    "steps",
    "cfg",
    "sampler",
    "dtype",
    "run_seed",
    "mask_method",
    "threshold",
    "feather",
    "blend",
    "context",
    "working",
    "batch_size",
    "category",
    "anomaly",
    "group",
)
"""Sidecar fields equal for every pair sampled in one call: a batch mate whose sidecar differs in one of them
was rewritten by another run."""


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path, "sha256")


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256, computed once per process while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def model_sha256(path: str | os.PathLike) -> str:
    """sha256 of a model file, or for a folder (a diffusers SD1.5) of its files' relative paths and sha256s in
    name order, so a changed, added or removed file changes it."""
    import hashlib

    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    listing = "".join(f"{p.relative_to(path).as_posix()}\t{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def model_hashes(base: Path, weights: list[Path], u2netp: bool) -> dict[str, Any]:
    """``{"base": sha, "weights": [sha, ...], "u2netp": sha or None}``: U²-Net-P when it made the mask, the random
    regions or the BCM blackout (its output shapes the pair)."""
    record: dict[str, Any] = {"base": model_sha256(base), "weights": [file_sha256(w) for w in weights], "u2netp": None}
    if u2netp:
        from ..common.assets import u2netp_path

        try:
            record["u2netp"] = file_sha256(u2netp_path())
        except FileNotFoundError:
            pass  # a stand-in network (tests); nothing to pin
    return record


def region_record(zone: np.ndarray) -> dict[str, Any]:
    """The region as crop and stitch see it (``> 0.5`` at the photo's size), as a COCO RLE with text counts."""
    from ..dataset.coco import coco_instances

    return coco_instances(np.asarray(zone) > 0.5, "mask")[0]["segmentation"]


def region_of(record: dict[str, Any], where: str) -> np.ndarray:
    """``(H, W)`` bool region from ``region_record``'s RLE; a bad record names ``where``."""
    from ..dataset.coco import _rle_tools

    try:
        rle = {"size": [int(v) for v in record["size"]], "counts": str(record["counts"]).encode("ascii")}
        return _rle_tools().decode(rle).astype(bool)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not a region record ({exc}); expected a COCO RLE with size and counts") from exc


def background_record(files: list[Path] | None, every: int, pair: int, size: list[int]) -> dict[str, Any] | None:
    """Pair ``pair``'s BCM background: the normal image, its sha256, and the ``[width, height]`` it was resized to
    before its object was blacked out (then, with regions, cut out with each defect's window, recorded per
    defect). None without backgrounds. Needs only the file list, so a writer that never decoded them can say it."""
    if not files:
        return None
    from .backgrounds import background_of

    path = files[background_of(pair, every, len(files))]
    return {"file": str(Path(path).resolve()), "sha256": file_sha256(path), "resized_to": list(size)}


__all__ = [
    "RUN_KEYS",
    "background_record",
    "file_sha256",
    "model_hashes",
    "model_sha256",
    "region_of",
    "region_record",
]
