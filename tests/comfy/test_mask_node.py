"""Extract Anomaly Mask run in-process as ComfyUI would: IMAGE (B, H, W, 3) in, MASK and IMAGE out."""

from __future__ import annotations

import importlib
import os

import cv2
import numpy as np
import pytest
import torch
from pack import PACK_NAME, import_pack

H, W = 96, 128


@pytest.fixture(scope="module")
def mask_module(comfyui_root):
    import_pack()
    return importlib.import_module(f"{PACK_NAME}.nodes.dataset.mask")


@pytest.fixture
def node(mask_module):
    return mask_module.NODE_CLASS_MAPPINGS["DualAnoDiffExtractMask"]()


def shapes() -> np.ndarray:
    """(2, H, W) truth: a dark slanted scratch in image 0, a disc and a square in image 1."""
    truth = np.zeros((2, H, W), np.uint8)
    cv2.fillPoly(truth[0], [np.array([[10, 20], [110, 70], [105, 80], [6, 30]], np.int32)], 1)
    cv2.circle(truth[1], (40, 50), 18, 1, -1)
    truth[1, 20:40, 80:110] = 1
    return truth.astype(bool)


def anomaly_batch(truth: np.ndarray, seed: int = 0) -> torch.Tensor:
    """The anomaly branch's IMAGE: defects on the 0.5 grey canvas with mild noise, float (B, H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = np.full((*truth.shape, 3), 0.5, np.float32)
    images[0][truth[0]] = (0.1, 0.1, 0.12)
    images[1][truth[1]] = (0.85, 0.4, 0.2)
    images += rng.normal(0.0, 0.02, images.shape).astype(np.float32)
    return torch.from_numpy(np.clip(images, 0.0, 1.0))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_mappings_and_schema(mask_module):
    cls = mask_module.NODE_CLASS_MAPPINGS["DualAnoDiffExtractMask"]
    assert mask_module.NODE_DISPLAY_NAME_MAPPINGS == {"DualAnoDiffExtractMask": "Extract Anomaly Mask"}
    assert cls.CATEGORY == "DualAnoDiff/mask" and cls.DESCRIPTION
    assert cls.RETURN_TYPES == ("MASK", "IMAGE") and len(cls.OUTPUT_TOOLTIPS) == 2
    assert callable(getattr(cls(), cls.FUNCTION))
    spec = cls.INPUT_TYPES()
    inputs = {name: opts for section in spec.values() for name, opts in section.items()}
    assert list(inputs) == ["anomaly", "method", "threshold", "grow", "min_area"]
    for name, (_, options) in inputs.items():
        assert options.get("tooltip"), f"input {name} has no tooltip"
    assert inputs["anomaly"][0] == "IMAGE"
    assert inputs["method"][0] == ["u2netp", "grey distance"]
    assert inputs["threshold"][0] == "FLOAT" and inputs["threshold"][1]["default"] == 0.5
    assert inputs["grow"][0] == "INT" and (inputs["grow"][1]["min"], inputs["grow"][1]["max"]) == (-64, 64)
    assert inputs["grow"][1]["default"] == 0 and inputs["min_area"][1]["default"] == 0


def test_grey_distance_recovers_each_image(node):
    truth = shapes()
    mask, preview = node.extract(anomaly_batch(truth), "grey distance", 0.5, 0, 0)
    assert isinstance(mask, torch.Tensor) and mask.shape == (2, H, W) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert preview.shape == (2, H, W, 3) and preview.dtype == torch.float32
    assert 0.0 <= preview.min() and preview.max() <= 1.0
    found = mask.numpy() > 0.5
    for b in range(2):
        assert iou(found[b], truth[b]) >= 0.9, f"image {b}"
    reds = preview[..., 0] - preview[..., 1]
    assert reds[mask > 0].mean() > reds[mask == 0].mean() + 0.2, "the preview must tint the mask red"


def test_grow_and_min_area_reach_the_library(node):
    truth = shapes()
    images = anomaly_batch(truth)
    base = node.extract(images, "grey distance", 0.5, 0, 0)[0]
    grown = node.extract(images, "grey distance", 0.5, 4, 0)[0]
    assert (grown.sum(dim=(1, 2)) > base.sum(dim=(1, 2))).all()
    # image 1: a 600-pixel square and a 1009-pixel disc; image 0: a 1353-pixel scratch
    only_large = node.extract(images, "grey distance", 0.5, 0, 800)[0].numpy() > 0.5
    disc = truth[1].copy()
    disc[20:40, 80:110] = False
    assert iou(only_large[1], disc) >= 0.9 and not only_large[1][20:40, 80:110].any()
    assert iou(only_large[0], truth[0]) >= 0.9
    assert not node.extract(images, "grey distance", 0.5, 0, 1500)[0][1].any()


def test_u2netp_masks_an_object(node, mask_module):
    try:
        path = mask_module.load_u2netp().path
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(str(err), pytrace=False)
        pytest.skip(str(err))
    images = np.full((2, H, W, 3), 0.9, np.float32)
    obj = np.zeros((H, W), np.uint8)
    cv2.circle(obj, (W // 2, H // 2), 30, 1, -1)
    obj = obj.astype(bool)
    texture = np.random.default_rng(0).uniform(0.7, 1.0, (H, W, 1)).astype(np.float32)
    images[:, obj] = (np.array([0.2, 0.3, 0.8], np.float32) * texture)[obj]
    mask = node.extract(torch.from_numpy(images), "u2netp", 0.5, 0, 0)[0].numpy() > 0.5
    for b in range(2):
        assert mask[b][obj].mean() > 0.8 and mask[b][~obj].mean() < 0.05
    assert mask_module.load_u2netp() is mask_module.load_u2netp(), "the session must be cached per path"
    assert str(path).endswith("u2netp.onnx")


def test_errors_are_meant_for_the_ui(node, monkeypatch, tmp_path):
    images = anomaly_batch(shapes())
    with pytest.raises(ValueError, match="method must be one of u2netp, grey distance"):
        node.extract(images, "otsu", 0.5, 0, 0)
    with pytest.raises(ValueError, match=r"anomaly must be an IMAGE \(B, H, W, 3\)"):
        node.extract(images[0], "grey distance", 0.5, 0, 0)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        node.extract(images, "grey distance", 1.5, 0, 0)
    monkeypatch.setenv("ANODIFF_U2NETP", str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="Extract Anomaly Mask: .*'grey distance'"):
        node.extract(images, "u2netp", 0.5, 0, 0)
