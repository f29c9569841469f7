"""COCO instance annotations that grow in constant time per pair and stay safe with concurrent writers.

Every export call appends its pairs to a JSON-lines shard of its own, ``annotations/<category>.parts/<time>-<pid>-
<random>.jsonl`` (created exclusively, one line per image with its RLE annotations), so adding a pair never reads
or rewrites what is there. ``merge_coco`` builds the COCO file ``annotations/<category>.json`` from all shards in
name (= creation) order, numbering images, annotations and categories in that order; it is a derived file, rebuilt
on demand (the ``anodiff export`` command does it once at its end); a shard's last line still without its
newline (being written, or cut off by a killed exporter) is left out with a warning. A COCO file written before
shards existed is taken over once as the first shard, and the next free index of each of its anomaly types is
recorded (``anodiff.dataset.numbering``), so numbering continues after pairs whose image files were moved away.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..common.imageio import write_atomic
from ..common.jobs import open_exclusive
from .numbering import record_next_index
from .tree import index_of

log = logging.getLogger(__name__)
LEGACY_SHARD = "00000000T000000Z-legacy.jsonl"
INSTANCES = ("component", "mask")


def coco_path(root: Path, category: str) -> Path:
    return Path(root) / "annotations" / f"{category}.json"


def parts_dir(root: Path, category: str) -> Path:
    return Path(root) / "annotations" / f"{category}.parts"


def _new_coco(category: str) -> dict[str, Any]:
    info = {
        "description": f"DualAnoDiff synthetic anomalies: {category}",
        "contributor": "anodiff export",
        "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {"info": info, "licenses": [], "images": [], "annotations": [], "categories": []}


def load_coco(path: Path, category: str) -> dict[str, Any]:
    """The COCO dict at ``path``, checked, or a new one when the file does not exist."""
    if not path.is_file():
        return _new_coco(category)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        for key in ("images", "annotations", "categories"):
            if not isinstance(coco[key], list) or not all(isinstance(e, dict) and "id" in e for e in coco[key]):
                raise TypeError(f"{key} must be a list of objects with an id")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a COCO instances file ({exc}); move it away or choose another out_dir") from exc
    return coco


def _rle_tools() -> Any:
    try:
        from pycocotools import mask
    except ImportError as err:
        raise ImportError("COCO export needs pycocotools: `pip install pycocotools`, or export mvtec only") from err
    return mask


def coco_instances(mask: np.ndarray, instances: str = "component") -> list[dict[str, Any]]:
    """``[{"segmentation": RLE with str counts, "area", "bbox"}]`` for an ``(H, W)`` bool mask, one per 8-connected
    component (``"component"``) or one for the whole mask (``"mask"``); empty for an empty mask."""
    rle_tools = _rle_tools()
    if instances not in INSTANCES:
        raise ValueError(f"instances must be one of {', '.join(INSTANCES)}, got {instances!r}")
    if not mask.any():
        return []
    if instances == "mask":
        parts = [mask]
    else:
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        parts = [labels == k for k in range(1, count)]
    out = []
    for part in parts:
        rle = rle_tools.encode(np.asfortranarray(part.astype(np.uint8)))
        area, bbox = float(rle_tools.area(rle)), [float(v) for v in rle_tools.toBbox(rle)]
        out.append(
            {
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": area,
                "bbox": bbox,
            }
        )
    return out


def adopt_legacy(root: Path, category: str) -> None:
    """Turn a COCO file written before shards existed into the first shard (once), keeping its order, and record
    the next free index of each anomaly type after its pairs."""
    folder, path = parts_dir(root, category), coco_path(root, category)
    if folder.is_dir() or not path.is_file():
        return
    coco = load_coco(path, category)
    names = {c["id"]: c.get("name") for c in coco["categories"]}
    anns: dict[Any, list[dict]] = {}
    anomaly_of: dict[Any, str] = {}
    for ann in coco["annotations"]:
        anns.setdefault(ann.get("image_id"), []).append(
            {k: ann[k] for k in ("segmentation", "area", "bbox") if k in ann}
        )
        anomaly_of.setdefault(ann.get("image_id"), names.get(ann.get("category_id")))
    lines, nexts = [], {}
    for entry in coco["images"]:
        parts = Path(str(entry.get("file_name", ""))).parts  # <category>/test/<anomaly>/NNN.png
        anomaly = anomaly_of.get(entry["id"]) or (parts[2] if len(parts) > 3 else "defect")
        index = index_of(parts[-1]) if parts else None
        if index is not None:
            nexts[anomaly] = max(nexts.get(anomaly, 0), index + 1)
        record = {k: entry[k] for k in ("file_name", "width", "height") if k in entry}
        lines.append(json.dumps({**record, "anomaly": anomaly, "annotations": anns.get(entry["id"], [])}))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        open_exclusive(folder / LEGACY_SHARD).close()
    except FileExistsError:
        return  # another writer took it over at the same moment
    write_atomic(folder / LEGACY_SHARD, "".join(line + "\n" for line in lines).encode("utf-8"))
    for anomaly, index in nexts.items():
        record_next_index(root, category, anomaly, index)


class ShardWriter:
    """One export call's shard: ``add`` appends one image line (constant time), flushed so a crash keeps it."""

    def __init__(self, root: Path, category: str) -> None:
        folder = parts_dir(root, category)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"{time.time_ns() % 1_000_000_000:09d}Z"
        self.path = folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}.jsonl"
        self._fh = open_exclusive(self.path)

    def add(
        self, file_name: str, width: int, height: int, anomaly: str, annotations: list[dict], extra: dict | None = None
    ) -> None:
        """extra: more fields for the COCO image entry (e.g. ``anodiff``: the pair's sidecar)."""
        line = {
            "file_name": file_name,
            "width": width,
            "height": height,
            "anomaly": anomaly,
            "annotations": annotations,
        }
        if extra:
            line["extra"] = extra
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()

    def close(self) -> None:
        empty = self._fh.tell() == 0
        self._fh.close()
        if empty:
            self.path.unlink(missing_ok=True)


def _complete_lines(shard: Path) -> list[str]:
    """The shard's lines, less a last one without its newline: an exporter writes each record and its newline in
    one go, so such a line is one still being written (another exporter at work) or cut off by a killed one. It
    is left out with a warning instead of failing every later merge; a bad line before it still fails."""
    complete, _, last = shard.read_bytes().rpartition(b"\n")
    try:
        lines = complete.decode("utf-8").split("\n") if complete else []
    except UnicodeDecodeError as exc:
        raise ValueError(f"{shard}: not an export shard, not UTF-8 text ({exc}); move the file away") from exc
    if last.strip():
        log.warning(
            "%s: its last line (%d) has no newline, so its exporter is still writing it or was killed "
            "mid-write; left out of this merge (merge again once the exporter has finished)",
            shard,
            len(lines) + 1,
        )
    return lines


def merge_coco(root: str | Path, category: str) -> Path:
    """Write ``annotations/<category>.json`` from every shard of the category; returns its path."""
    return _merged(Path(root), category)[0]


def finalise(root: str | Path, category: str | None = None) -> list[tuple[Path, str]]:
    """Merge the shards of ``category`` (None: of every category with shards) into their COCO files; returns each
    file with what it holds, e.g. ``"12 images, 15 annotations, 2 categories"``."""
    folder = Path(root) / "annotations"
    if category is not None and (category.strip() in ("", ".", "..") or any(c in category for c in "/\\")):
        raise ValueError(f"category must be a plain folder name, got {category!r}")
    names = [category] if category else sorted(p.name[: -len(".parts")] for p in folder.glob("*.parts") if p.is_dir())
    if not names or not (parts_dir(root, names[0]).is_dir() or coco_path(root, names[0]).is_file()):
        what = f"category {category!r}" if category else "any category"
        raise FileNotFoundError(f"{folder}: no exported COCO records of {what}; export with the coco format first")
    out = []
    for name in names:
        path, coco = _merged(Path(root), name)
        counts = (len(coco["images"]), len(coco["annotations"]), len(coco["categories"]))
        out.append((path, "{} images, {} annotations, {} categories".format(*counts)))
    return out


def _merged(root: Path, category: str) -> tuple[Path, dict[str, Any]]:
    adopt_legacy(root, category)
    coco = _new_coco(category)
    categories: dict[str, int] = {}
    for shard in sorted(parts_dir(root, category).glob("*.jsonl")):
        for number, line in enumerate(_complete_lines(shard), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                anomaly = record["anomaly"]
                image = {
                    "id": len(coco["images"]) + 1,
                    "file_name": record["file_name"],
                    "width": record["width"],
                    "height": record["height"],
                    **record.get("extra", {}),
                }
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{shard}, line {number}: not an export record ({exc}); move the file away") from exc
            coco["images"].append(image)
            # several defect types on one image: each annotation names its own (its COCO category)
            for name in [a.get("anomaly", anomaly) for a in record["annotations"]] or [anomaly]:
                if name not in categories:
                    categories[name] = len(categories) + 1
                    coco["categories"].append({"id": categories[name], "name": name, "supercategory": category})
            for ann in record["annotations"]:
                name = ann.get("anomaly", anomaly)
                fields = {k: v for k, v in ann.items() if k != "anomaly"}
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image["id"],
                        "category_id": categories[name],
                        "iscrowd": 0,
                        **fields,
                    }
                )
    path = coco_path(root, category)
    write_atomic(path, json.dumps(coco, indent=1).encode("utf-8"))
    return path, coco
