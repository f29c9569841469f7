"""Defect placement (``anodiff.regions.placement``): random regions wholly on the object, reproducible, in the asked
ranges."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from anodiff.regions import placement as regions

H, W = 120, 160


def disc(h: int = H, w: int = W, radius: int = 50) -> np.ndarray:
    out = np.zeros((h, w), np.uint8)
    cv2.circle(out, (w // 2, h // 2), radius, 1, -1)
    return out.astype(bool)


def l_shape() -> np.ndarray:
    """An L: a vertical bar 40 px wide and a horizontal one 36 px tall; its corner is the roomiest part."""
    out = np.zeros((H, W), bool)
    out[10:110, 10:50] = True
    out[74:110, 10:150] = True
    return out


FOREGROUNDS = {"disc": disc(), "L": l_shape()}


def box(region: np.ndarray) -> tuple[int, int]:
    """(height, width) of the region's bounding box."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def fits_ranges(h: int, w: int, side: int, size: tuple[float, float], aspect: tuple[float, float]) -> bool:
    """Whether some real (h', w') within half a pixel of (h, w) has its size and aspect in range (the sampler
    rounds a real-valued box to whole pixels)."""
    smallest, largest = math.sqrt((h - 0.5) * (w - 0.5)) / side, math.sqrt((h + 0.5) * (w + 0.5)) / side
    flattest, tallest = (w + 0.5) / (h - 0.5), (w - 0.5) / (h + 0.5)
    return smallest <= size[1] and largest >= size[0] and tallest <= aspect[1] and flattest >= aspect[0]


@pytest.mark.parametrize("shape", regions.SHAPES)
@pytest.mark.parametrize("name", list(FOREGROUNDS))
def test_regions_lie_inside_the_foreground_in_range(name, shape):
    foreground = FOREGROUNDS[name]
    size, aspect = (0.08, 0.3), (0.4, 2.5)
    for seed in range(60):
        drawn = regions.sample_regions(foreground, 3, size, aspect, shape, seed=seed)
        assert len(drawn) == 3
        for region in drawn:
            assert region.shape == (H, W) and region.dtype == bool and region.any()
            assert not (region & ~foreground).any(), f"seed {seed}: a region reaches the background"
            h, w = box(region)
            assert fits_ranges(h, w, H, size, aspect), f"seed {seed}: box {h}x{w} out of range"
            if shape == "rectangle":
                assert region.sum() == h * w
            elif min(h, w) >= 6:
                assert 0.72 * h * w < region.sum() < 0.9 * h * w, "an ellipse covers about pi/4 of its box"


def test_sizes_and_aspects_spread_over_the_range():
    foreground = np.ones((400, 400), bool)
    drawn = regions.sample_regions(foreground, 300, (0.1, 0.4), (0.5, 2.0), "rectangle", seed=3)
    boxes = np.array([box(r) for r in drawn], np.float64)
    sizes, aspects = np.sqrt(boxes[:, 0] * boxes[:, 1]) / 400, boxes[:, 1] / boxes[:, 0]
    assert sizes.min() >= 0.1 - 0.005 and sizes.max() <= 0.4 + 0.005
    assert sizes.min() < 0.13 and sizes.max() > 0.37
    assert aspects.min() >= 0.49 and aspects.max() <= 2.03
    assert aspects.min() < 0.6 and aspects.max() > 1.7 and 0.35 < (aspects > 1).mean() < 0.65, "log-uniform aspect"
    centres = np.array([np.argwhere(r).mean(axis=0) for r in drawn])
    assert centres.min() < 80 and centres.max() > 320, "regions spread over the foreground"


def test_the_same_seed_gives_the_same_regions():
    foreground = l_shape()
    first = regions.sample_regions(foreground, 4, seed=7)
    again = regions.sample_regions(foreground, 4, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert np.array_equal(
        regions.sample_regions(foreground, 2, seed=(7, 1))[0], regions.sample_regions(foreground, 2, seed=(7, 1))[0]
    )
    others = [regions.sample_regions(foreground, 1, seed=s)[0] for s in range(10)]
    assert len({o.tobytes() for o in others}) == 10, "different seeds must give different regions"
    assert len({r.tobytes() for r in first}) == 4, "the regions of one call must differ"
    assert not np.array_equal(
        regions.sample_regions(foreground, 1, seed=(7, 0))[0], regions.sample_regions(foreground, 1, seed=(7, 1))[0]
    )


def test_a_tight_foreground_still_gets_regions_that_fit():
    """A disc barely larger than the regions: few positions fit, and the sampler finds them."""
    foreground = disc(radius=16)
    for seed in range(20):
        (region,) = regions.sample_regions(foreground, 1, (20 / H, 22 / H), (1.0, 1.0), "ellipse", seed=seed)
        assert not (region & ~foreground).any()


@pytest.mark.parametrize("shape", regions.SHAPES)
def test_a_foreground_the_exact_shape_of_the_region_is_found(shape):
    """Only one position fits, so pruning candidate centres must never rule out a valid one."""
    size, aspect = (math.sqrt(30 * 20) / H,) * 2, (1.5, 1.5)
    (exact,) = regions.sample_regions(np.ones((H, W), bool), 1, size, aspect, shape, seed=5)
    assert box(exact) == (20, 30)
    for seed in range(5):
        (found,) = regions.sample_regions(exact, 1, size, aspect, shape, seed=seed)
        assert np.array_equal(found, exact)


def test_count_zero_gives_no_regions():
    assert regions.sample_regions(disc(), 0) == []


def test_empty_or_small_foreground_is_a_clear_error():
    with pytest.raises(ValueError, match="foreground is empty.*lower the threshold or erode less"):
        regions.sample_regions(np.zeros((H, W), bool), 1)
    speck = np.zeros((H, W), bool)
    speck[50:56, 60:66] = True
    with pytest.raises(ValueError, match=r"too small: its widest part is about \d+ px.*lower the minimum size"):
        regions.sample_regions(speck, 1, size=(0.2, 0.3))
    # The narrow side fits the disc but the square's corners do not: found out only by trying.
    with pytest.raises(ValueError, match="found no place for region 1 of 1 in 50 tries.*raise max_tries"):
        regions.sample_regions(disc(radius=20), 1, (38 / H, 38 / H), (1.0, 1.0), "rectangle", max_tries=50)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (0.3, 0.2)}, r"size must satisfy 0 < min <= max <= 1"),
        ({"size": (0.0, 0.2)}, r"size must satisfy"),
        ({"aspect": (2.0, 0.5)}, r"aspect must satisfy"),
        ({"shape": "star"}, r"unknown region shape 'star'; use one of ellipse, rectangle"),
        ({"count": -1}, r"count must be >= 0"),
        ({"max_tries": 0}, r"max_tries must be >= 1"),
    ],
)
def test_bad_arguments_name_the_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        regions.sample_regions(disc(), **{"count": 1, **kwargs})


def test_foreground_accepts_float_masks_and_rejects_batches():
    soft = disc().astype(np.float32) * 0.9
    (region,) = regions.sample_regions(soft, 1, seed=1)
    assert not (region & ~disc()).any()
    with pytest.raises(ValueError, match=r"2-D mask \(H, W\).*one mask of a batch"):
        regions.sample_regions(np.stack([disc(), disc()]), 1)


def test_feather_fades_inwards_only():
    region = np.zeros((H, W), bool)
    region[30:90, 40:120] = True
    assert np.array_equal(regions.feather(region, 0), region.astype(np.float32))
    soft = regions.feather(region, 6)
    assert soft.dtype == np.float32 and soft.min() == 0.0 and soft.max() == 1.0
    assert not soft[~region].any(), "feathering must not reach outside the region"
    assert soft[60, 80] == 1.0 and 0.0 < soft[30, 80] < 0.5 and soft[33, 80] < soft[36, 80]


class DiscSaliency:
    """Stands in for U²-Net-P: saliency 0.9 on a disc, a soft 0.3 halo round it, 0 elsewhere."""

    def saliency(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.where(disc(h, w, 40), 0.9, np.where(disc(h, w, 48), 0.3, 0.0)).astype(np.float32)


def test_foreground_mask_thresholds_and_erodes():
    image = np.full((H, W, 3), 0.5, np.float32)
    assert np.array_equal(regions.foreground_mask(image, DiscSaliency()), disc(radius=40))
    assert np.array_equal(regions.foreground_mask(image, DiscSaliency(), threshold=0.2), disc(radius=48))
    eroded = regions.foreground_mask(image, DiscSaliency(), erode=10)
    assert eroded.sum() < disc(radius=31).sum() and not (eroded & ~disc(radius=40)).any()
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
        regions.foreground_mask(image, DiscSaliency(), threshold=2)
    with pytest.raises(ValueError, match="erode must be >= 0"):
        regions.foreground_mask(image, DiscSaliency(), erode=-1)
    with pytest.raises(TypeError, match="model must be a U2NetP"):
        regions.foreground_mask(image, object())


def test_preview_tints_regions_and_outlines_the_foreground():
    image = np.full((H, W, 3), 0.5, np.float32)
    foreground = disc()
    drawn = regions.sample_regions(foreground, 2, seed=0)
    out = regions.preview(image, foreground, drawn)
    assert out.shape == (H, W, 3) and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    for index, region in enumerate(drawn):
        tint = np.array(regions.PALETTE[index])
        assert np.abs(out[region].mean(axis=0) - (0.55 * 0.5 + 0.45 * tint)).max() < 0.15
    outline = np.all(np.isclose(out, regions.OUTLINE), axis=2)
    ring = disc(radius=50) & ~disc(radius=47)
    assert outline[ring].mean() > 0.3 and not outline[disc(radius=40)].any()
    with pytest.raises(ValueError, match="foreground must have the image's size"):
        regions.preview(image, foreground[:-1], drawn)


def test_u2netp_foreground_covers_the_object_not_the_background(u2net):
    """A textured red disc on a plain light background, as in test_masks: the object, and no corner."""
    h, w = 192, 256
    obj = disc(h, w, 60)
    texture = np.random.default_rng(0).uniform(0.7, 1.0, (h, w, 1)).astype(np.float32)
    image = np.full((h, w, 3), 0.9, np.float32)
    image[obj] = (np.array([0.8, 0.15, 0.1], np.float32) * texture)[obj]
    foreground = regions.foreground_mask(image, u2net)
    assert foreground.dtype == bool and foreground.shape == (h, w)
    assert foreground[obj].mean() > 0.95 and foreground[~obj].mean() < 0.02
    for corner in (foreground[:24, :24], foreground[:24, -24:], foreground[-24:, :24], foreground[-24:, -24:]):
        assert not corner.any()
    eroded = regions.foreground_mask(image, u2net, erode=8)
    assert not (eroded & ~foreground).any() and eroded.sum() < 0.85 * foreground.sum()
    for region in regions.sample_regions(eroded, 5, seed=11):
        assert not (region & ~obj).any(), "a region reaches the background"
