"""Per-pair metadata sidecars: what every generated pair was made from, so it can be traced and regenerated.

``<out>/<category>/meta/<anomaly>/NNN.json`` beside the MVTec tree holds the source photo, each defect's region
box and crop window, the model file, seed, steps, guidance and sampler; ``labels/<anomaly>/NNN.png`` holds the
label mask (id ``k + 1`` per defect) when a pair has several defects. ``anodiff generate --resume`` and
``anodiff export`` read them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..common.imageio import read_label, write_atomic

VERSION = 1


def sidecar_path(folder: Path, anomaly: str, index: int) -> Path:
    return Path(folder) / "meta" / anomaly / f"{index:03d}.json"


def label_path(folder: Path, anomaly: str, index: int) -> Path:
    return Path(folder) / "labels" / anomaly / f"{index:03d}.png"


def for_image(image: Path) -> tuple[Path, Path]:
    """(sidecar, label mask) of the pair whose image is ``<category>/test/<anomaly>/NNN.png``."""
    image = Path(image)
    folder, anomaly, index = image.parents[2], image.parent.name, image.stem
    return folder / "meta" / anomaly / f"{index}.json", folder / "labels" / anomaly / f"{index}.png"


def write_sidecar(path: Path, record: dict[str, Any]) -> None:
    write_atomic(Path(path), json.dumps({"version": VERSION, **record}, indent=1).encode("utf-8"))


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The record, or None when the pair has none (made before sidecars existed); unreadable is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise TypeError("expected a JSON object")
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{path}: not a pair sidecar ({exc}); move it away or regenerate the pair with --force"
        ) from exc
    return record


def pair_sidecar(image: Path) -> tuple[dict | None, np.ndarray | None]:
    """The sidecar record and label mask of the pair whose image is ``image``, each None when not written."""
    meta_path, label_file = for_image(image)
    label = None
    if label_file.is_file():
        label = read_label(label_file)
        if label.ndim != 2:
            raise ValueError(f"{label_file}: not a grey label mask (one id per defect); move it away")
    return read_sidecar(meta_path), label


def defect_instances(label: np.ndarray, mask: np.ndarray, types: list[str] | None = None) -> list[dict]:
    """COCO annotations, one per defect id of a label mask (several defects on one image), tagged ``defect_id``;
    with ``types`` (one per id) each names its own defect type, which becomes its COCO category."""
    from .coco import coco_instances

    if label.shape != mask.shape:
        raise ValueError(f"label mask {label.shape} and mask {mask.shape} of one pair differ in size")
    ids = [int(i) for i in np.unique(label) if i]
    if types is not None and ids and max(ids) > len(types):
        raise ValueError(f"the label mask has defect id {max(ids)} but only {len(types)} defect type(s) were named")
    named = (lambda i: {"anomaly": types[i - 1]}) if types else (lambda i: {})
    return [{**ann, "defect_id": i, **named(i)} for i in ids for ann in coco_instances(label == i, "mask")]


__all__ = [
    "defect_instances",
    "for_image",
    "label_path",
    "pair_sidecar",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]
