"""Grey and 16-bit sources (``anodiff.common.pixels``): crop-and-stitch, several defects, ``anodiff generate`` with
region control and ``anodiff export`` keep the photo's channels and bit depth for 8/16-bit grey and 8/16-bit RGB;
the generated crop is turned into the photo's colour model (a grey part gets a grey defect); outside the grown
regions the output is the source file's pixels, byte for byte, at full resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anodiff.common.pixels import read_pixels, to_pixels, unit_rgb
from anodiff.regions.multi_defect import add_defects
from anodiff.regions.stitch import BLENDS, crop, crop_window, grown_region, stitch

KINDS = {"grey8": (np.uint8, 1), "grey16": (np.uint16, 1), "rgb8": (np.uint8, 3), "rgb16": (np.uint16, 3)}
H, W = 1200, 1600
RED = np.array([230, 26, 26], np.float32) / 255.0


def source_photo(kind: str, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Noise over the whole range of the kind's depth: a lost low byte or a resampled pixel changes its bytes."""
    dtype, channels = KINDS[kind]
    shape = (h, w) if channels == 1 else (h, w, 3)
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=np.int64).astype(dtype)


def write_file(path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels if pixels.ndim == 2 else pixels[..., ::-1])
    return path


def box(h: int, w: int, top: int, left: int, side_h: int, side_w: int) -> np.ndarray:
    region = np.zeros((h, w), bool)
    region[top : top + side_h, left : left + side_w] = True
    return region


def red_defect(photo_crop: np.ndarray, region_crop: np.ndarray, k: int = 0):
    """The model's output stand-in: a saturated red patch filling the region, at the working size."""
    out = photo_crop.copy()
    out[region_crop] = RED
    return out, region_crop


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_stitch_keeps_channels_depth_and_bytes(kind, blend, tmp_path):
    photo = read_pixels(write_file(tmp_path / f"{kind}.png", source_photo(kind)))
    assert photo.dtype == KINDS[kind][0] and photo.ndim == (2 if KINDS[kind][1] == 1 else 3)
    region = box(H, W, 500, 700, 120, 200)
    window = crop_window(region, 2.0, 512)
    photo_crop, region_crop = crop(photo, region, window)
    assert photo_crop.shape == (*window.work_shape, 3) and photo_crop.dtype == np.float32  # the model sees RGB
    generated, defect = red_defect(photo_crop, region_crop)
    image, mask = stitch(photo, generated, region, window, mask=defect, feather=4, blend=blend)
    assert image.dtype == photo.dtype and image.shape == photo.shape
    outside = ~grown_region(region, 4)
    assert image[outside].tobytes() == photo[outside].tobytes()
    core = cv2.erode(region.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    if blend == "feather":  # inside, the red defect in the photo's colour model and depth, exactly
        expected = to_pixels(RED[None, None], photo)[0, 0]
        assert np.abs(image[core].astype(np.int64) - expected.astype(np.int64)).max() <= 1  # 1 LSB of resampling
        if photo.ndim == 2:
            scale = np.iinfo(photo.dtype).max
            assert int(expected) == round(float(RED @ [0.299, 0.587, 0.114]) * scale)  # luminance, not one channel
    else:
        assert np.abs(unit_rgb(image)[core] - unit_rgb(photo)[core]).mean() > 0.1  # the defect is there
    assert np.array_equal(mask, region)


@pytest.mark.parametrize("kind", KINDS)
def test_several_defects_keep_channels_depth_and_bytes(kind):
    photo = source_photo(kind, seed=1)
    regions = [box(H, W, 100, 100, 60, 300), box(H, W, 800, 1200, 40, 40)]
    result = add_defects(photo, regions, red_defect, working=256, feather=3)
    assert result.image.dtype == photo.dtype and result.image.shape == photo.shape
    outside = ~(grown_region(regions[0], 3) | grown_region(regions[1], 3))
    assert result.image[outside].tobytes() == photo[outside].tobytes()
    assert sorted(np.unique(result.label)) == [0, 1, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_and_export_keep_the_source_file_pixels(kind, sd_dir, plain_weights, tmp_path, one_torch_thread):
    """Region generation with two defects (a label image) on a full-resolution photo of each kind, then export:
    both files keep the photo's channels and depth, and its bytes outside the grown regions."""
    from test_export import run_cli

    from anodiff.generate.run import generate

    h, w = 360, 480
    photo = source_photo(kind, h, w, seed=2)
    source = write_file(tmp_path / f"part.{kind}.png", photo)
    label = np.zeros((h, w), np.uint8)
    label[60:100, 80:200] = 1
    label[250:290, 300:340] = 2
    regions = write_file(tmp_path / "regions.png", label)
    report = generate(
        sd_dir,
        plain_weights,
        tmp_path / "gen",
        1,
        source=source,
        region=regions,
        region_ids=True,
        feather=3,
        batch_size=1,
        steps=2,
        scheduler="ddim",
        size=64,
        mask_method="grey",
        progress=False,
    )
    assert report.written == 1
    made = read_pixels(tmp_path / "gen" / "object" / "test" / "defect" / "000.png")
    assert made.dtype == photo.dtype and made.shape == photo.shape
    outside = ~(grown_region(label == 1, 3) | grown_region(label == 2, 3))
    assert made[outside].tobytes() == photo[outside].tobytes()
    assert (made[label > 0] != photo[label > 0]).any()
    assert run_cli(["export", "--from", str(tmp_path / "gen"), "--out", str(tmp_path / "set")]) == 0
    exported = read_pixels(tmp_path / "set" / "object" / "test" / "defect" / "000.png")
    assert exported.dtype == photo.dtype and exported.tobytes() == made.tobytes()
