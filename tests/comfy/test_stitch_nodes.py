"""Crop Region / Stitch Region / Defect Labels / Export Defects / Load Photo Folder through the nodes: a large
photo kept value for value outside the grown region, two defect types from two models on one part, one COCO
annotation per defect, a folder of photos of different sizes loaded as a list with names."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from dual_files import write_dual_weights
from pack import import_pack
from tiny import build_tiny_model

from anodiff.regions.stitch import grown_region


@pytest.fixture
def nodes(comfyui_root, tmp_path, monkeypatch):
    import folder_paths

    pack = import_pack()  # first: the pack registers models/dualanodiff, which the patch below must restore, not drop
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dualanodiff", ([str(tmp_path)], {".safetensors"}))
    write_dual_weights(tmp_path / "crack.safetensors", seed=3)
    write_dual_weights(tmp_path / "scratch.safetensors", seed=8)
    return pack.nodes.NODE_CLASS_MAPPINGS


def big_photo(h=480, w=640):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    noise = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    return (torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], -1) + noise)[None].clamp(0, 1)


def regions(h=480, w=640):
    out = torch.zeros(2, h, w)
    out[0, 100:160, 120:200] = 1
    out[1, 300:380, 420:480] = 1
    return out


def cond(seed, width=64):
    return [[torch.randn(1, 77, width, generator=torch.Generator().manual_seed(seed)), {}]]


def one_defect(nodes, vae, photo, zones, index, lora, seed):
    """Crop -> Region Latent -> Dual Sampler -> decode -> Stitch, as the workflow wires it."""
    image, zone, stitch = nodes["DualAnoDiffCropRegion"]().crop(photo, zones, 2.0, 64, index)
    assert image.shape[1:3] == zone.shape[1:] and max(image.shape[1:3]) == 64
    model, _ = nodes["DualAnoDiffLoadLoRA"]().load(build_tiny_model(), None, lora, 1.0, 1.0, 1.0)
    (latent,) = nodes["DualAnoDiffRegionLatent"]().make(vae, image, zone, batch_size=1)
    g, _, _ = nodes["DualAnoDiffSampler"]().sample(
        model, cond(1), cond(2), cond(3), latent, seed, 3, 2.0, "euler", "normal", 1.0
    )
    decoded = vae.decode(g["samples"])
    return nodes["DualAnoDiffStitchRegion"]().stitch(decoded, stitch, 4, "feather", mask=zone)


def test_crop_and_stitch_keeps_the_full_size_photo_outside_the_grown_region(nodes, tiny_sd15):
    _, _, vae = tiny_sd15
    photo, zones = big_photo(), regions()
    image, mask = one_defect(nodes, vae, photo, zones[:1], -1, "crack.safetensors", 7)
    assert image.shape == photo.shape and mask.shape == (1, 480, 640)
    outside = torch.from_numpy(~grown_region(zones[0].numpy(), 4))
    assert torch.equal(image[0][outside], photo[0][outside])  # the photo's own values, not a resampled copy
    assert (image[0][zones[0] > 0] - photo[0][zones[0] > 0]).abs().max() > 1e-3
    assert torch.equal(mask[0], zones[0])  # the region's mask, at full size


def test_two_defect_types_on_one_part_give_labels_and_coco(nodes, tiny_sd15, tmp_path, monkeypatch):
    import folder_paths
    from pycocotools.coco import COCO

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path / "output"))
    _, _, vae = tiny_sd15
    photo, zones = big_photo(), regions()
    first, mask_1 = one_defect(nodes, vae, photo, zones, 0, "crack.safetensors", 7)
    second, mask_2 = one_defect(nodes, vae, first, zones, 1, "scratch.safetensors", 8)
    both = torch.from_numpy(grown_region(zones[0].numpy(), 4) | grown_region(zones[1].numpy(), 4))
    assert torch.equal(second[0][~both], photo[0][~both])
    assert torch.equal(second[0][zones[0] > 0], first[0][zones[0] > 0])  # the second paste leaves the first defect
    labels, _, preview = nodes["DualAnoDiffDefectLabels"]().merge(mask_1, mask_2=mask_2)
    assert set(labels.unique().tolist()) == {0.0, 1.0, 2.0} and preview.shape == (1, 480, 640, 3)
    out = nodes["DualAnoDiffExportDefects"]().export(second, labels, "crack, scratch", "set", "part", "mixed")
    assert "1 mixed pair" in out["result"][0]
    nodes["DualAnoDiffFinaliseDataset"]().finalise("set", "part")
    coco = COCO(str(tmp_path / "output" / "set" / "annotations" / "part.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(coco.loadCats(a["category_id"])[0]["name"] for a in anns) == ["crack", "scratch"]
    with pytest.raises(ValueError, match="defect_types must name a defect type for each of the 2"):
        nodes["DualAnoDiffExportDefects"]().export(second, labels, "crack", "set", "part", "mixed")
    with pytest.raises(ValueError, match="masks 1 and 2 overlap"):
        nodes["DualAnoDiffDefectLabels"]().merge(mask_1, mask_2=mask_1)


def test_crop_refuses_overlapping_regions_and_every_input_has_a_tooltip(nodes):
    zones = regions()
    zones[1, 120:170, 150:210] = 1
    with pytest.raises(ValueError, match="regions 1 and 2 overlap"):
        nodes["DualAnoDiffCropRegion"]().crop(big_photo(), zones, 2.0, 64, 0)
    with pytest.raises(ValueError, match="differ in size"):
        nodes["DualAnoDiffCropRegion"]().crop(big_photo(), zones[:, :100], 2.0, 64, -1)
    near = regions()
    near[1, 163:190, 150:200] = 1  # 3 px below region 1: disjoint, but inside a 4 px feather of it
    image, zone, stitch = nodes["DualAnoDiffCropRegion"]().crop(big_photo(), near, 2.0, 64, 1)
    for feather in (4, 10):  # the paste, grown by the feather, would change defect 1
        with pytest.raises(ValueError, match=rf"Stitch Region: regions 1 and 2 lie within the feather \({feather} px"):
            nodes["DualAnoDiffStitchRegion"]().stitch(image, stitch, feather, "feather", mask=zone)
    out, _ = nodes["DualAnoDiffStitchRegion"]().stitch(image, stitch, 2, "feather", mask=zone)  # 2 px: clear of it
    assert torch.equal(out[0][near[0] > 0], big_photo()[0][near[0] > 0])
    labels = nodes["DualAnoDiffDefectLabels"]()
    with pytest.raises(ValueError, match=r"Defect Labels: masks 1 and 2 lie within the feather \(4 px\)"):
        labels.merge(near[:1], mask_2=near[1:])  # the default feather is Stitch Region's, 4 px
    assert labels.merge(near[:1], mask_2=near[1:], feather=2)[0].unique().tolist() == [0.0, 1.0, 2.0]
    for name in (
        "DualAnoDiffCropRegion",
        "DualAnoDiffStitchRegion",
        "DualAnoDiffDefectLabels",
        "DualAnoDiffExportDefects",
        "DualAnoDiffLoadPhotoFolder",
    ):
        for section in nodes[name].INPUT_TYPES().values():
            assert all(opts.get("tooltip") for _, opts in section.values()), name


def test_load_photo_folder_gives_each_photo_at_its_size_with_its_name(nodes, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    (tmp_path / "photos").mkdir()
    sizes = {"b.png": (50, 70), "a.jpg": (64, 64), "c.png": (30, 90)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(tmp_path / "photos" / name), np.full((h, w, 3), 128, np.uint8))
    (tmp_path / "photos" / "notes.txt").write_text(json.dumps({"not": "a photo"}))
    images, names, count = nodes["DualAnoDiffLoadPhotoFolder"]().load("photos", 0, 0)
    assert names == ["a.jpg", "b.png", "c.png"] and count == 3
    assert [tuple(i.shape) for i in images] == [(1, 64, 64, 3), (1, 50, 70, 3), (1, 30, 90, 3)]
    images, names, _ = nodes["DualAnoDiffLoadPhotoFolder"]().load(str(tmp_path / "photos"), 1, 1)
    assert names == ["b.png"]
    with pytest.raises(ValueError, match="folder not found"):
        nodes["DualAnoDiffLoadPhotoFolder"]().load("nowhere", 0, 0)
    with pytest.raises(ValueError, match="b.png is 70x50 and a.jpg 64x64; use output=list"):
        nodes["DualAnoDiffLoadPhotoFolder"]().load("photos", 0, 0, "batch")
    (batch,), (listed,), count = nodes["DualAnoDiffLoadPhotoFolder"]().load("photos", 1, 1, "batch")
    assert batch.shape == (1, 50, 70, 3) and listed == "b.png" and count == 1
    node = nodes["DualAnoDiffLoadPhotoFolder"]
    before = node.IS_CHANGED("photos")
    assert before and node.IS_CHANGED("photos") == before  # ComfyUI's cache holds while the folder is unchanged
    cv2.imwrite(str(tmp_path / "photos" / "d.png"), np.full((8, 8, 3), 128, np.uint8))
    assert node.IS_CHANGED("photos") != before  # a new photo: the node runs again


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_stitch_node_blends_only_inside_the_grown_region(nodes, blend):
    photo, zones = big_photo(), regions()
    image, zone, stitch = nodes["DualAnoDiffCropRegion"]().crop(photo, zones[1:], 1.5, 128, -1)
    stripes = (torch.arange(image.shape[2]) // 4) % 2  # a textured stand-in: Poisson keeps gradients, not offsets
    brighter = (image + 0.3 * (zone * stripes)[..., None]).clamp(0, 1)  # a stand-in for the decoded window
    out, mask = nodes["DualAnoDiffStitchRegion"]().stitch(brighter, stitch, 3, blend)
    outside = torch.from_numpy(~grown_region(zones[1].numpy(), 3))
    assert torch.equal(out[0][outside], photo[0][outside]) and torch.equal(mask[0], zones[1])
    assert (out[0][zones[1] > 0] - photo[0][zones[1] > 0]).abs().mean() > 0.05
    with pytest.raises(ValueError, match="not the window's size"):
        nodes["DualAnoDiffStitchRegion"]().stitch(brighter[:, :64], stitch, 3, blend)


def test_a_batch_of_differently_shaped_regions_shares_one_window_shape(nodes):
    """Windows follow their region's shape, but a batch needs one shape: regions of different shapes get windows
    around a common box, each still holding its region; the stitched photos keep their bytes outside."""
    photo = torch.cat([big_photo(), big_photo().flip(2)])
    zones = torch.zeros(2, 480, 640)
    zones[0, 100:160, 120:200] = 1  # 60 x 80
    zones[1, 300:312, 100:400] = 1  # a 12 x 300 scratch
    image, zone, stitch = nodes["DualAnoDiffCropRegion"]().crop(photo, zones, 2.0, 128, -1)
    assert image.shape[0] == 2 and zone.shape[0] == 2
    for k, window in enumerate(stitch["windows"]):
        x, y, w, h = window.box
        assert zones[k, y : y + h, x : x + w].sum() == zones[k].sum()  # the whole region is in its window
    stripes = (torch.arange(image.shape[2]) // 4) % 2
    out, mask = nodes["DualAnoDiffStitchRegion"]().stitch(
        (image + 0.3 * (zone * stripes)[..., None]).clamp(0, 1), stitch, 3, "feather"
    )
    for k in range(2):
        outside = torch.from_numpy(~grown_region(zones[k].numpy(), 3))
        assert torch.equal(out[k][outside], photo[k][outside]) and torch.equal(mask[k], zones[k])
