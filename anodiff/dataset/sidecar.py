"""Per-pair metadata sidecars: what every generated pair was made from, so it can be traced and regenerated.

``<out>/<category>/meta/<anomaly>/NNN.json`` beside the MVTec tree holds the source photo, each defect's region
box, shape and crop window, the model files, seed, steps, guidance and sampler, and with them everything
``anodiff generate --from-sidecar`` needs to make the pair again (version 2; ``anodiff.generate.provenance`` says
what); ``labels/<anomaly>/NNN.png`` holds the label mask (id ``k + 1`` per defect) when a pair has several defects, and
only then: a pair rewritten with one defect loses the label of an earlier run (``write_label``). ``anodiff generate
--resume`` and ``anodiff export`` read them back; export trusts a label only when it can be this pair's
(``pair_sidecar``, ``label_matches``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..common.imageio import read_label, write_atomic, write_png

log = logging.getLogger(__name__)
VERSION = 2


def sidecar_path(folder: Path, anomaly: str, index: int) -> Path:
    return Path(folder) / "meta" / anomaly / f"{index:03d}.json"


def label_path(folder: Path, anomaly: str, index: int) -> Path:
    return Path(folder) / "labels" / anomaly / f"{index:03d}.png"


def for_image(image: Path) -> tuple[Path, Path]:
    """(sidecar, label mask) of the pair whose image is ``<category>/test/<anomaly>/NNN.png``."""
    image = Path(image)
    folder, anomaly, index = image.parents[2], image.parent.name, image.stem
    return folder / "meta" / anomaly / f"{index}.json", folder / "labels" / anomaly / f"{index}.png"


def write_label(path: Path, label: np.ndarray | None) -> None:
    """Write the pair's label mask, or with ``None`` (one defect, or none) remove the label an earlier run left:
    ``generate --force`` with fewer defects must not leave a label that export would take for this pair's."""
    if label is None:
        Path(path).unlink(missing_ok=True)
    else:
        write_png(Path(path), label)


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
    """The sidecar record and label mask of the pair whose image is ``image``, each None when not written.

    A label is dropped (with a warning) when the sidecar lists one defect or none (or, made without regions, no
    defect list): generate writes labels only for several defects, so such a label is left from an earlier run
    (trees made before ``write_label``). Without a sidecar the label is kept; export still checks it against the
    mask (``label_matches``).
    """
    meta_path, label_file = for_image(image)
    record = read_sidecar(meta_path)
    if not label_file.is_file():
        return record, None
    defects = record.get("defects", []) if record is not None else None  # no "defects": made without regions
    if isinstance(defects, list) and len(defects) <= 1:
        log.warning(
            "%s: ignored, %s lists %d defect(s), so this label is left from an earlier run; the COCO "
            "annotations come from the mask",
            label_file,
            meta_path,
            len(defects),
        )
        return record, None
    label = read_label(label_file)
    if label.ndim != 2:
        raise ValueError(f"{label_file}: not a grey label mask (one id per defect); move it away")
    return record, label


def label_matches(label: np.ndarray, mask: np.ndarray) -> bool:
    """Whether a label mask's defects cover exactly the pair's mask, as generate writes them (mask = label > 0);
    a label that does not is from another run or was edited apart from the mask, and cannot be trusted."""
    return label.shape == mask.shape and bool(np.array_equal(label > 0, mask))


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
    "label_matches",
    "label_path",
    "pair_sidecar",
    "read_sidecar",
    "sidecar_path",
    "source_photo",
    "write_label",
    "write_sidecar",
]


def source_photo(image: Path) -> Path | None:
    """The photo the pair of ``image`` was generated into (region control), from its sidecar's ``source_root`` and
    ``source``; None when the pair has no sidecar, was made without a photo, or the photo is no longer there."""
    record = read_sidecar(for_image(image)[0])
    if not record or not record.get("source") or not record.get("source_root"):
        return None
    path = Path(record["source_root"]) / record["source"]
    if not path.is_file():
        log.info("%s: its source photo %s is gone", image, path)
        return None
    return path
