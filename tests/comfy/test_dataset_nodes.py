"""Filter Pairs and Export Dataset run in-process as ComfyUI would: IMAGE (B, H, W, 3) and MASK (B, H, W) in."""

from __future__ import annotations

import importlib
import json

import cv2
import numpy as np
import pytest
import torch
from pack import PACK_NAME, import_pack

H, W = 48, 64


@pytest.fixture(scope="module")
def dataset_module(comfyui_root):
    import_pack()
    return importlib.import_module(f"{PACK_NAME}.nodes.dataset.dataset")


@pytest.fixture
def output_dir(comfyui_root, tmp_path):
    """ComfyUI's output folder pointed at a temporary folder for one test."""
    import folder_paths

    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    yield tmp_path / "output"
    folder_paths.set_output_directory(previous)


def scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, masks, source, foreground): pair 0 good, 1 empty mask, 2 mask on the background, 3 good."""
    source = np.full((H, W, 3), 0.9, np.float32)
    obj = np.zeros((H, W), np.uint8)
    cv2.circle(obj, (32, 24), 18, 1, -1)
    source[obj > 0] = (0.8, 0.2, 0.1)
    regions = np.zeros((4, H, W), np.uint8)
    cv2.circle(regions[0], (30, 22), 5, 1, -1)
    cv2.circle(regions[2], (5, 5), 4, 1, -1)
    cv2.ellipse(regions[3], (36, 28), (8, 3), 20, 0, 360, 1, -1)
    images = np.repeat(source[None], 4, axis=0)
    for b in (0, 2, 3):
        images[b][regions[b] > 0] = (0.1, 0.1, 0.1)
    masks = regions.astype(np.float32)
    masks[1] = 0.0
    return (
        torch.from_numpy(images),
        torch.from_numpy(masks),
        torch.from_numpy(source[None]),
        torch.from_numpy(obj.astype(np.float32)[None]),
    )


def inputs_of(cls) -> dict:
    return {name: opts for section in cls.INPUT_TYPES().values() for name, opts in section.items()}


@pytest.mark.parametrize("name", ["DualAnoDiffFilterPairs", "DualAnoDiffExportDataset", "DualAnoDiffFinaliseDataset"])
def test_schema_has_tooltips_everywhere(dataset_module, name):
    cls = dataset_module.NODE_CLASS_MAPPINGS[name]
    assert dataset_module.NODE_DISPLAY_NAME_MAPPINGS[name] in ("Filter Pairs", "Export Dataset", "Finalise Dataset")
    assert cls.CATEGORY == "DualAnoDiff/dataset" and cls.DESCRIPTION
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and callable(getattr(cls(), cls.FUNCTION))
    for input_name, (_, options) in inputs_of(cls).items():
        assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_filter_pairs_keeps_good_pairs_and_says_why(dataset_module):
    node = dataset_module.DualAnoDiffFilterPairs()
    images, masks, source, foreground = scene()
    kept, kept_masks, report = node.filter(images, masks, 0.5, 0.5, 0.3, 0.1, source=source, foreground=foreground)
    assert torch.equal(kept, images[[0, 3]]) and torch.equal(kept_masks, masks[[0, 3]])
    lines = report.splitlines()
    assert lines == ["pair 1: empty mask", lines[1]] and lines[1].startswith("pair 2: mask mostly outside the object")
    plain = node.filter(images, masks, 0.5, 0.5, 0.3, 0.1)
    assert plain[0].shape[0] == 3 and plain[2] == "pair 1: empty mask"
    moved = node.filter(images, masks, 0.5, 0.0, 0.3, 0.1, source=torch.roll(source, 6, dims=2))
    assert "pair 0: mask disagrees with where the image departs from the source" in moved[2]
    all_kept = node.filter(images[[0]], masks[[0]], 0.5, 0.5, 0.3, 0.1, source=source, foreground=foreground)
    assert all_kept[2] == "" and all_kept[0].shape == (1, H, W, 3)


def test_filter_pairs_mask_gate_settings(dataset_module):
    """min_area and max_pieces reach the gate: a 3-pixel speck and a mask in 3 pieces are dropped with the reason."""
    node = dataset_module.DualAnoDiffFilterPairs()
    options = inputs_of(type(node))
    assert options["min_area"][1]["default"] == 0.001 and options["max_pieces"][1]["default"] == 5
    assert options["max_area"][1]["default"] == 0.2
    images = scene()[0]
    speck, pieces = torch.zeros(H, W), torch.zeros(H, W)
    speck[10, 10:13] = 1.0
    for x in (10, 20, 30):
        pieces[30:33, x : x + 3] = 1.0
    both = torch.stack([speck, pieces])
    out = node.filter(images[[0, 3]], both, 0.2, 0.0, 0.0, 0.1, max_pieces=2)
    assert out[2].splitlines() == [
        "pair 0: mask too small: 0.0977% of the image (3 px, < min_area 0.1%)",
        "pair 1: mask in too many pieces: 3 (> max_pieces 2)",
    ]
    kept = node.filter(images[[0, 3]], both, 0.2, 0.0, 0.0, 0.1, min_area=0.0, max_pieces=3)
    assert kept[2] == "" and kept[0].shape[0] == 2


def test_filter_pairs_blocks_downstream_when_all_are_dropped(dataset_module):
    from comfy_execution.graph_utils import ExecutionBlocker

    images, masks, _, _ = scene()
    out = dataset_module.DualAnoDiffFilterPairs().filter(images[[1]], masks[[1]], 0.5, 0.5, 0.3, 0.1)
    assert isinstance(out[0], ExecutionBlocker) and isinstance(out[1], ExecutionBlocker)
    assert out[0].message is None and out[2] == "pair 0: empty mask"


def test_filter_pairs_errors_name_the_input(dataset_module):
    node = dataset_module.DualAnoDiffFilterPairs()
    images, masks, source, _ = scene()
    with pytest.raises(ValueError, match=r"Filter Pairs: mask holds 3 mask\(s\) for 4 image\(s\)"):
        node.filter(images, masks[:3], 0.5, 0.5, 0.3, 0.1)
    with pytest.raises(ValueError, match=r"Filter Pairs: image must be an IMAGE \(B, H, W, 3\)"):
        node.filter(images[0], masks, 0.5, 0.5, 0.3, 0.1)
    with pytest.raises(ValueError, match="Filter Pairs: 2 sources for 4 images"):
        node.filter(images, masks, 0.5, 0.5, 0.3, 0.1, source=source.expand(2, -1, -1, -1))


def test_export_writes_mvtec_and_coco_and_adds_on_a_second_run(dataset_module, output_dir):
    from pycocotools.coco import COCO

    node = dataset_module.DualAnoDiffExportDataset()
    images, masks, _, _ = scene()
    out = node.export(images[[0, 3]], masks[[0, 3]], "sets/run1", "bottle", "crack", "mvtec+coco")
    summary = out["result"][0]
    assert out["ui"]["text"] == [summary] and "2 crack pair(s) as 000-001" in summary
    root = output_dir / "sets" / "run1"
    first = (root / "bottle" / "test" / "crack" / "000.png").read_bytes()
    again = node.export(images[[2]], masks[[2]], "sets/run1", "bottle", "crack", "mvtec+coco")["result"][0]
    assert "as 002-002" in again
    assert (root / "bottle" / "test" / "crack" / "000.png").read_bytes() == first
    written = cv2.imread(str(root / "bottle" / "ground_truth" / "crack" / "002_mask.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(written > 127, masks[2].numpy() > 0.5)
    assert "queue Finalise Dataset to write annotations/bottle.json" in again
    assert not (root / "annotations" / "bottle.json").exists()  # appended only; the merge is the finalise step
    finalise = dataset_module.DualAnoDiffFinaliseDataset()
    done = finalise.finalise("sets/run1", "")["result"][0]
    assert done == f"{root / 'annotations' / 'bottle.json'}: 3 images, 3 annotations, 1 categories"
    coco = COCO(str(root / "annotations" / "bottle.json"))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 3
    node.export(images[[0]], masks[[0]], "sets/coco_only", "bottle", "crack", "coco")
    assert not (output_dir / "sets" / "coco_only" / "bottle" / "ground_truth").exists()
    finalise.finalise("sets/coco_only", "bottle")
    assert json.loads((output_dir / "sets" / "coco_only" / "annotations" / "bottle.json").read_text())["images"]


def test_export_nodes_append_and_finalise_writes_every_call(dataset_module, output_dir):
    """Many prompts into one set: each call only appends (never reads or rewrites what is there), and the COCO
    file Finalise Dataset writes holds every call's pairs, also when finalised again after more calls."""
    from pycocotools.coco import COCO

    import_pack()
    defects = importlib.import_module(f"{PACK_NAME}.nodes.regions.defects").DualAnoDiffExportDefects()
    node, finalise = dataset_module.DualAnoDiffExportDataset(), dataset_module.DualAnoDiffFinaliseDataset()
    images, masks, _, _ = scene()
    labels = masks[[0]] + 2 * masks[[2]]  # two disjoint defects on one image: ids 1 and 2
    parts = output_dir / "many" / "annotations" / "bottle.parts"
    expected = {"images": 0, "annotations": 0}
    for call in range(1, 31):
        if call % 5:
            node.export(images[[0, 3]], masks[[0, 3]], "many", "bottle", "crack", "mvtec+coco")
            expected["images"] += 2
        else:
            defects.export(images[[0]], labels, "crack, scratch", "many", "bottle", "mixed")
            expected["images"] += 1
        expected["annotations"] += 2
        if call == 10:
            (summary,) = finalise.finalise("many", "bottle")["result"]
            assert summary.endswith(f"{expected['images']} images, {expected['annotations']} annotations, 2 categories")
            first = min(parts.glob("*.jsonl"))
            first.write_text("a record no later export call may read\n" + first.read_text())
    first.write_text(first.read_text().split("\n", 1)[1])
    finalise.finalise("many", "")
    coco = COCO(str(output_dir / "many" / "annotations" / "bottle.json"))
    assert len(coco.getImgIds()) == expected["images"] == 54 and len(coco.getAnnIds()) == expected["annotations"]
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["crack", "scratch"]
    files = {img["file_name"] for img in coco.loadImgs(coco.getImgIds())}
    assert files == {f"bottle/test/crack/{i:03d}.png" for i in range(48)} | {
        f"bottle/test/mixed/{i:03d}.png" for i in range(6)
    }
    for image_id in coco.getImgIds():
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            assert coco.annToMask(ann).sum() == ann["area"] > 0


def test_finalise_without_records_names_the_folder(dataset_module, output_dir):
    finalise = dataset_module.DualAnoDiffFinaliseDataset()
    assert finalise.IS_CHANGED(output_dir="x", category="") != finalise.IS_CHANGED(output_dir="x", category="")
    with pytest.raises(ValueError, match=r"Finalise Dataset: .*annotations: no exported COCO records of any category"):
        finalise.finalise("empty_set", "")
    with pytest.raises(ValueError, match="Finalise Dataset: output_dir"):
        finalise.finalise("../escape", "")
    with pytest.raises(ValueError, match="Finalise Dataset: category must be a plain folder name"):
        finalise.finalise("empty_set", "../bottle")


@pytest.mark.parametrize("path", ["../escape", "sets/../../escape", "/tmp/anodiff_escape", "", "."])
def test_export_refuses_paths_outside_the_output_folder(dataset_module, output_dir, path):
    images, masks, _, _ = scene()
    with pytest.raises(ValueError, match="Export Dataset: output_dir"):
        dataset_module.DualAnoDiffExportDataset().export(images[[0]], masks[[0]], path, "bottle", "crack", "mvtec")
    assert not (output_dir.parent / "escape").exists()


def test_export_errors_name_the_input(dataset_module, output_dir):
    node = dataset_module.DualAnoDiffExportDataset()
    images, masks, _, _ = scene()
    with pytest.raises(ValueError, match="Export Dataset: category must be a plain folder name"):
        node.export(images, masks, "sets", "a/b", "crack", "mvtec")
    with pytest.raises(ValueError, match=r"Export Dataset: masks holds 2 mask\(s\) for 4 image\(s\)"):
        node.export(images, masks[:2], "sets", "bottle", "crack", "mvtec")
    with pytest.raises(ValueError, match="Export Dataset: format must be one of"):
        node.export(images, masks, "sets", "bottle", "crack", "yolo")
