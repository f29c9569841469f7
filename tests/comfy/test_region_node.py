"""Random Defect Region run in-process as ComfyUI would: IMAGE (B, H, W, 3) in; regions, foreground and preview out."""

from __future__ import annotations

import importlib
import os

import cv2
import numpy as np
import pytest
import torch
from pack import PACK_NAME, import_pack

H, W = 96, 128
INPUTS = [
    "image",
    "count",
    "min_size",
    "max_size",
    "min_aspect",
    "max_aspect",
    "shape",
    "seed",
    "erode",
    "threshold",
    "feather",
    "foreground",
]


@pytest.fixture(scope="module")
def region_module(comfyui_root):
    import_pack()
    return importlib.import_module(f"{PACK_NAME}.nodes.regions.random_region")


@pytest.fixture
def node(region_module):
    return region_module.NODE_CLASS_MAPPINGS["DualAnoDiffRandomRegion"]()


def disc(radius: int = 36) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    cv2.circle(out, (W // 2, H // 2), radius, 1, -1)
    return out.astype(bool)


def photos(batch: int = 2) -> torch.Tensor:
    """Normal photos: a textured blue disc on a plain light background, float (B, H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(0)
    images = np.full((batch, H, W, 3), 0.9, np.float32)
    texture = rng.uniform(0.7, 1.0, (batch, H, W, 1)).astype(np.float32)
    images[:, disc()] = (np.array([0.2, 0.3, 0.8], np.float32) * texture)[:, disc()]
    return torch.from_numpy(images)


def run(node, image, foreground=None, **overrides):
    args = {
        "count": 3,
        "min_size": 0.1,
        "max_size": 0.3,
        "min_aspect": 0.5,
        "max_aspect": 2.0,
        "shape": "ellipse",
        "seed": 0,
        "erode": 0,
        "threshold": 0.5,
        "feather": 0,
    } | overrides
    return node.sample(image, foreground=foreground, **args)


def test_mappings_and_schema(region_module):
    cls = region_module.NODE_CLASS_MAPPINGS["DualAnoDiffRandomRegion"]
    assert region_module.NODE_DISPLAY_NAME_MAPPINGS == {"DualAnoDiffRandomRegion": "Random Defect Region"}
    assert cls.CATEGORY == "DualAnoDiff/mask" and cls.DESCRIPTION
    assert cls.RETURN_TYPES == ("MASK", "MASK", "IMAGE") and cls.RETURN_NAMES == ("regions", "foreground", "preview")
    assert len(cls.OUTPUT_TOOLTIPS) == 3 and all(cls.OUTPUT_TOOLTIPS)
    assert callable(getattr(cls(), cls.FUNCTION))
    spec = cls.INPUT_TYPES()
    assert list(spec["optional"]) == ["foreground"] and spec["optional"]["foreground"][0] == "MASK"
    inputs = {name: opts for section in spec.values() for name, opts in section.items()}
    assert list(inputs) == INPUTS
    for name, (_, options) in inputs.items():
        assert options.get("tooltip"), f"input {name} has no tooltip"
    assert inputs["image"][0] == "IMAGE" and inputs["shape"][0] == ["ellipse", "rectangle"]
    assert inputs["count"][1]["default"] == 1 and inputs["count"][1]["min"] == 1
    assert (inputs["min_size"][1]["default"], inputs["max_size"][1]["default"]) == (0.05, 0.2)
    assert (inputs["min_aspect"][1]["default"], inputs["max_aspect"][1]["default"]) == (0.5, 2.0)
    assert inputs["seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF and inputs["erode"][1]["default"] == 0


def test_given_foreground_skips_u2netp(node, region_module, monkeypatch):
    def no_model():
        raise AssertionError("U²-Net-P must not load when a foreground is given")

    monkeypatch.setattr(region_module, "load_u2netp", no_model)
    given = torch.from_numpy(np.stack([disc(36), disc(28)]).astype(np.float32))
    regions, foreground, preview = run(node, photos(), given, erode=4)
    assert regions.shape == (6, H, W) and regions.dtype == torch.float32
    assert foreground.shape == (2, H, W) and foreground.dtype == torch.float32
    assert preview.shape == (2, H, W, 3) and preview.dtype == torch.float32
    assert 0.0 <= preview.min() and preview.max() <= 1.0
    assert set(regions.unique().tolist()) == {0.0, 1.0} and set(foreground.unique().tolist()) == {0.0, 1.0}
    assert foreground[1].sum() < disc(24).sum(), "erode shrinks the given foreground"
    for index, region in enumerate(regions.numpy() > 0.5):
        b = index // 3
        assert region.any() and not (region & ~(foreground[b].numpy() > 0.5)).any(), f"region {index} off the object"
    assert len({r.numpy().tobytes() for r in regions}) == 6, "every region differs, across images too"
    assert not torch.equal(preview[0], photos()[0]), "the preview marks the regions"


def test_one_foreground_serves_the_batch_and_the_seed_repeats(node):
    one = torch.from_numpy(disc()[None].astype(np.float32))
    regions, foreground, _ = run(node, photos(3), one, count=2, shape="rectangle", seed=42)
    assert regions.shape == (6, H, W) and foreground.shape == (3, H, W)
    assert torch.equal(foreground[0], foreground[2])
    assert torch.equal(regions, run(node, photos(3), one[0], count=2, shape="rectangle", seed=42)[0])
    assert not torch.equal(regions, run(node, photos(3), one, count=2, shape="rectangle", seed=43)[0])


def test_feather_softens_inside_the_region(node):
    given = torch.from_numpy(disc()[None].astype(np.float32))
    hard = run(node, photos(1), given, count=1, seed=5)[0]
    soft = run(node, photos(1), given, count=1, seed=5, feather=4)[0]
    assert ((soft > 0) == (hard > 0)).all() and ((soft > 0) & (soft < 1)).any()


def test_u2netp_finds_the_object(node, region_module):
    try:
        region_module.load_u2netp()
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(str(err), pytrace=False)
        pytest.skip(str(err))
    regions, foreground, preview = run(node, photos(2), count=2, erode=3)
    assert regions.shape == (4, H, W) and foreground.shape == (2, H, W) and preview.shape == (2, H, W, 3)
    found = foreground.numpy() > 0.5
    for b in range(2):
        assert found[b][disc(30)].all() and not found[b][~disc(40)].any()
    assert not ((regions.numpy() > 0.5) & ~disc()).any(), "a region reaches the background"


def test_errors_are_meant_for_the_ui(node, monkeypatch, tmp_path):
    given = torch.from_numpy(disc()[None].astype(np.float32))
    with pytest.raises(ValueError, match=r"Random Defect Region: min_size \(0.4\) is above max_size \(0.2\)"):
        run(node, photos(), given, min_size=0.4, max_size=0.2)
    with pytest.raises(ValueError, match=r"min_aspect \(3\) is above max_aspect \(2\)"):
        run(node, photos(), given, min_aspect=3.0)
    with pytest.raises(ValueError, match=r"image must be an IMAGE \(B, H, W, 3\)"):
        run(node, photos()[0], given)
    with pytest.raises(ValueError, match=r"foreground must be a MASK of the image's size, \(1 or 2, 96, 128\)"):
        run(node, photos(), given[:, :-1])
    with pytest.raises(ValueError, match=r"Random Defect Region, image 0: the foreground is empty"):
        run(node, photos(), torch.zeros(1, H, W))
    with pytest.raises(ValueError, match="image 0: the foreground is too small"):
        run(node, photos(), given, erode=34, min_size=0.3, max_size=0.4)
    monkeypatch.setenv("ANODIFF_U2NETP", str(tmp_path / "missing.onnx"))
    with pytest.raises(FileNotFoundError, match="Random Defect Region: .*connect a mask of the object to 'foreground'"):
        run(node, photos())
