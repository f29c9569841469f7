"""Reading an MVTec-style tree (``<category>/test/<anomaly>/NNN.png`` + ``ground_truth`` masks), as written by
``anodiff generate`` and read by ``export`` and ``filter``.

Pairs that generate's record (``<category>/.anodiff-generate-<anomaly>.json``) still lists as pending are left
out: after an interrupted ``generate --force`` with new settings they hold files of the old settings. The record
is read here (``record_path``, ``read_pending``) and not in ``anodiff.generate.record``, which imports this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.mask_rule import read_binary_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TreePair:
    """One pair of an MVTec-style tree; ``part`` is the anomaly branch's image when the tree has one."""

    category: str
    anomaly: str
    index: int
    image: Path
    mask: Path
    part: Path | None = None


def index_of(name: str) -> int | None:
    """The pair index a file name starts with (``007.png``, ``007_mask.png``), or None."""
    head = name.split(".")[0].split("_")[0]
    return int(head) if head.isdigit() else None


def record_path(folder: Path, anomaly: str) -> Path:
    """Generate's settings record of ``<category>/test/<anomaly>``, ``folder`` being the category folder."""
    return Path(folder) / f".anodiff-generate-{anomaly}.json"


def read_pending(record: Path) -> set[int]:
    """The pairs a generate record still owes; none when there is no record or it cannot be read."""
    try:
        return set(json.loads(Path(record).read_text(encoding="utf-8")).get("pending", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def warn_pending(folder: Path, skipped: int, record: Path) -> None:
    """The one warning for pairs of ``folder`` left out because ``record`` lists them as pending."""
    if skipped:
        log.warning(
            "%s: %d pair(s) skipped, %s lists them as pending (a generate run was interrupted or is still "
            "running; their files may be from older settings); rerun the same anodiff generate command to "
            "finish them",
            folder,
            skipped,
            record.name,
        )


def read_mask(path: Path) -> np.ndarray:
    """``(H, W)`` bool from a 0/255 (or 0/1) mask file, by the one mask rule (``common.mask_rule``)."""
    return read_binary_mask(path)


def find_pairs(root: str | Path, category: str | None = None, anomaly: str | None = None) -> list[TreePair]:
    """The pairs of an MVTec-style tree, sorted by category, anomaly and index: ``test/<anomaly>/NNN.png`` with
    ``ground_truth/<anomaly>/NNN_mask.png``. Folders without masks (MVTec's ``good``) are skipped, and so are pairs
    generate's record lists as pending (module docstring), with one warning per folder."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    categories = [category] if category else sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
    pairs = []
    for cat in categories:
        test = root / cat / "test"
        if not test.is_dir():
            raise FileNotFoundError(f"{test} not found: no category {cat!r} in {root}")
        anomalies = [anomaly] if anomaly else sorted(p.name for p in test.iterdir() if p.is_dir())
        for anom in anomalies:
            folder = test / anom
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} not found: no anomaly type {anom!r} in {cat}")
            found, pending = [], read_pending(record_path(root / cat, anom))
            skipped = 0
            for image in sorted(folder.glob("*.png")):
                index = index_of(image.name)
                mask = root / cat / "ground_truth" / anom / f"{image.stem}_mask.png"
                if index is None or image.name.startswith("."):
                    continue
                if index in pending:
                    skipped += 1
                    continue
                if not mask.is_file():
                    log.warning("%s has no mask %s: skipped", image, mask.name)
                    continue
                part = root / cat / "anomaly_part" / anom / image.name
                found.append(TreePair(cat, anom, index, image, mask, part if part.is_file() else None))
            warn_pending(folder, skipped, record_path(root / cat, anom))
            pairs += sorted(found, key=lambda p: p.index)
    if not pairs:
        raise FileNotFoundError(f"{root}: no pairs (<category>/test/<anomaly>/NNN.png with ground_truth masks)")
    return pairs
