"""Label masks of several defects never outlive their pair: ``generate --force`` with one defect (or without
regions) removes the label an earlier run wrote, and export ignores a label that cannot be the pair's (the sidecar
lists one defect, or the label does not cover exactly the mask), taking the COCO annotations from the mask."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_generate_sources import FAST, disc_saliency, write_photos  # noqa: F401 (disc_saliency: a fixture)

from anodiff.cli import main
from anodiff.common.imageio import encode_png
from anodiff.generate.run import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def coco_boxes(root: Path) -> dict[str, list[list[float]]]:
    """COCO bboxes per exported image file name."""
    coco = json.loads((root / "annotations" / "object.json").read_text())
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for ann in coco["annotations"]:
        boxes[names[ann["image_id"]]].append(ann["bbox"])
    return boxes


def mask_box(mask_file: Path) -> list[float]:
    ys, xs = np.nonzero(cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE))
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@pytest.mark.usefixtures("disc_saliency")
def test_a_pair_rewritten_with_one_defect_loses_its_old_label(sd_dir, plain_weights, tmp_path):
    write_photos(tmp_path / "photos")
    kw = {**FAST, "source": tmp_path / "photos" / "part_3.png", "region": "random", "region_size": (0.12, 0.18)}
    generate(sd_dir, plain_weights, tmp_path / "out", 2, defects=2, **kw)
    folder = tmp_path / "out" / "object"
    labels = folder / "labels" / "defect"
    assert sorted(p.name for p in labels.iterdir()) == ["000.png", "001.png"]
    generate(sd_dir, plain_weights, tmp_path / "out", 2, defects=1, force=True, **kw)
    assert list(labels.iterdir()) == [], "one defect per pair now: the two-defect labels must go"
    generate(sd_dir, plain_weights, tmp_path / "out", 2, defects=2, force=True, **kw)
    generate(sd_dir, plain_weights, tmp_path / "out", 2, force=True, **FAST)  # without regions
    assert list(labels.iterdir()) == []
    assert main(["export", "--from", str(tmp_path / "out"), "--out", str(tmp_path / "coco"), "--format", "coco"]) == 0
    for name, boxes in coco_boxes(tmp_path / "coco").items():
        mask = folder / "ground_truth" / "defect" / f"{Path(name).stem}_mask.png"
        if cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).any():
            xs = [b[0] for b in boxes] + [b[0] + b[2] for b in boxes]
            ys = [b[1] for b in boxes] + [b[1] + b[3] for b in boxes]
            x, y, w, h = mask_box(mask)
            assert (min(xs), min(ys), max(xs), max(ys)) == (x, y, x + w, y + h), "COCO boxes lie on the mask"


def stale_tree(root: Path, sidecar: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """One pair whose label (two defects, top left) is from an earlier run: its mask is one blob bottom right."""
    folder = root / "object"
    image = np.full((40, 48, 3), 0.5, np.float32)
    mask = np.zeros((40, 48), bool)
    mask[25:35, 30:44] = True
    label = np.zeros((40, 48), np.uint8)
    label[2:8, 2:8], label[10:16, 10:16] = 1, 2
    for path, data in (
        (folder / "test" / "defect" / "000.png", encode_png(image)),
        (folder / "ground_truth" / "defect" / "000_mask.png", encode_png(mask.astype(np.uint8) * 255)),
        (folder / "labels" / "defect" / "000.png", encode_png(label)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if sidecar is not None:
        (folder / "meta" / "defect").mkdir(parents=True)
        (folder / "meta" / "defect" / "000.json").write_text(json.dumps(sidecar))
    return mask, label


@pytest.mark.parametrize(
    "sidecar, says",
    [
        ({"pair": 0, "defects": [{"id": 1}]}, "lists 1 defect"),  # rewritten with one defect
        ({"pair": 0, "source": None}, "lists 0 defect"),  # rewritten without regions
        ({"pair": 0, "defects": [{"id": 1}, {"id": 2}]}, "does not cover exactly its mask"),  # sidecar agrees, mask not
        (None, "does not cover exactly its mask"),  # no sidecar
    ],
)
def test_export_ignores_a_label_that_is_not_the_pairs(tmp_path, caplog, sidecar, says):
    stale_tree(tmp_path / "tree", sidecar)
    argv = ["export", "--from", str(tmp_path / "tree"), "--out", str(tmp_path / "coco"), "--format", "coco"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert says in caplog.text and "000.png" in caplog.text
    (boxes,) = coco_boxes(tmp_path / "coco").values()
    assert boxes == [[30.0, 25.0, 14.0, 10.0]]  # the mask's blob, not the label's two squares


def test_export_keeps_a_label_that_covers_the_mask(tmp_path):
    _, label = stale_tree(tmp_path / "tree", {"pair": 0, "defects": [{"id": 1}, {"id": 2}]})
    mask_file = tmp_path / "tree" / "object" / "ground_truth" / "defect" / "000_mask.png"
    mask_file.write_bytes(encode_png((label > 0).astype(np.uint8) * 255))
    assert main(["export", "--from", str(tmp_path / "tree"), "--out", str(tmp_path / "coco"), "--format", "coco"]) == 0
    coco = json.loads((tmp_path / "coco" / "annotations" / "object.json").read_text())
    assert sorted(a["defect_id"] for a in coco["annotations"]) == [1, 2]
