"""Crop-and-stitch on a 1600x1200 photo: the window follows the region's shape, stays inside the photo, works in
multiples of 64 px, keeps long scratches and small defects visible; the output keeps the photo's size and bytes
outside the grown region (feathered and Poisson), and the defect lands inside the region."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anodiff.regions.stitch import BLENDS, Window, crop, crop_window, grown_region, region_box, stitch, stitch_mask

H, W = 1200, 1600


def textured_photo(seed: int = 0) -> np.ndarray:
    """A smooth gradient with fine noise: any resampling or blending outside the region would change its bytes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    base = np.stack([0.3 + 0.4 * xx, 0.5 - 0.2 * yy, 0.4 + 0.1 * xx * yy], -1)
    return np.clip(base * 255 + rng.integers(-20, 21, (H, W, 3)), 0, 255).astype(np.uint8)


def square_region(top: int, left: int, side: int = 120) -> np.ndarray:
    region = np.zeros((H, W), bool)
    region[top : top + side, left : left + side] = True
    return region


def fake_generate(photo_crop: np.ndarray, region_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 'defect': a dark blob in the middle of the region at the working size, and its mask."""
    ys, xs = np.nonzero(region_crop)
    cy, cx = int(ys.mean()), int(xs.mean())
    mask = np.zeros(region_crop.shape, np.uint8)
    cv2.circle(mask, (cx, cy), max(2, (xs.max() - xs.min()) // 4), 1, -1)
    out = photo_crop.copy()
    out[mask > 0] = [0.05, 0.05, 0.05]
    return out, mask > 0


@pytest.mark.parametrize("blend", BLENDS)
def test_full_resolution_output_is_the_original_outside_the_grown_region(blend):
    photo, region = textured_photo(), square_region(530, 910)
    window = crop_window(region, context=2.0, working=512)
    assert (window.width, window.height) == (240, 240) and (window.work_width, window.work_height) == (512, 512)
    photo_crop, region_crop = crop(photo, region, window)
    assert photo_crop.shape == (512, 512, 3) and region_crop.shape == (512, 512)
    generated, mask = fake_generate(photo_crop, region_crop)
    image, full_mask = stitch(photo, generated, region, window, mask=mask, feather=4, blend=blend)
    assert image.shape == photo.shape and image.dtype == np.uint8 and full_mask.shape == (H, W)
    outside = ~grown_region(region, 4)
    assert image[outside].tobytes() == photo[outside].tobytes()  # byte for byte
    assert full_mask.any() and not full_mask[~region].any()  # the mask at full size, inside the region
    changed = np.abs(image.astype(int) - photo.astype(int)).max(axis=2) > 40
    assert changed.any() and not changed[outside].any()
    ys, xs = np.nonzero(full_mask)
    assert 530 <= ys.min() and ys.max() < 650 and 910 <= xs.min() and xs.max() < 1030  # the defect is in the region
    assert image[full_mask].mean() < 60  # and it is the dark blob, at full resolution


def test_poisson_matches_the_lighting_at_the_seam_unlike_a_hard_paste():
    """A window generated 0.25 too bright: Poisson (seamlessClone) carries its gradients but takes its boundary from
    the photo, so the seam band matches the photo and the inside loses the offset; a hard paste of the same window
    (what a stubbed-out ``_poisson`` would give) keeps the step. Outside the grown region: the photo's bytes."""
    photo, region = textured_photo(2), square_region(530, 910)
    window = crop_window(region, context=2.0, working=512)
    photo_crop, region_crop = crop(photo, region, window)
    generated, _ = fake_generate(np.clip(photo_crop + 0.25, 0, 1), region_crop)
    image, _ = stitch(photo, generated, region, window, feather=4, blend="poisson")
    grown = grown_region(region, 4)
    assert image[~grown].tobytes() == photo[~grown].tobytes()
    x, y, w, h = window.box
    back = np.round(np.clip(cv2.resize(generated, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1) * 255).astype(np.uint8)
    hard = photo.copy()
    hard[y : y + h, x : x + w][grown[y : y + h, x : x + w]] = back[grown[y : y + h, x : x + w]]
    seam = grown & ~cv2.erode(grown.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # 2 px inner band

    def error(picture, where):
        return np.abs(picture[where].astype(float) - photo[where].astype(float)).mean()

    assert error(hard, seam) > 40 and error(image, seam) < 0.5 * error(hard, seam)  # no step at the seam
    assert np.abs(image[grown].astype(float) - hard[grown].astype(float)).mean() > 30  # not a hard paste inside
    dark = np.zeros(photo.shape[:2], bool)
    dark[y : y + h, x : x + w] = cv2.resize(generated, (w, h)).mean(axis=2) < 0.1
    assert image[dark].mean() < image[grown & ~dark].mean() - 40  # the defect itself is still there


def test_float_photos_keep_their_values_and_no_mask_means_the_region():
    photo = textured_photo(1).astype(np.float32) / 255.0
    region = square_region(100, 100, 90)
    window = crop_window(region, 1.5, 256)
    photo_crop, _ = crop(photo, region, window)
    image, mask = stitch(photo, np.clip(photo_crop + 0.3, 0, 1), region, window, feather=0)
    assert image.dtype == np.float32 and np.array_equal(image[~region], photo[~region])
    assert np.array_equal(mask, region)


def _keeps_aspect(win: Window, step: int = 64) -> bool:
    """One scale maps both photo sides to their working sides, up to the rounding to ``step``."""
    lo = max((win.work_width - step / 2) / win.width, (win.work_height - step / 2) / win.height)
    hi = min((win.work_width + step / 2) / win.width, (win.work_height + step / 2) / win.height)
    return lo <= hi + 1e-9


def _defect(win: Window, w: int, h: int) -> float:
    """The region's short side in working pixels."""
    return min(w * win.work_width / win.width, h * win.work_height / win.height)


def test_crop_window_never_leaves_the_photo_and_follows_the_model_multiples(caplog):
    rng = np.random.default_rng(3)
    for _ in range(300):
        h, w = int(rng.integers(200, 2000)), int(rng.integers(200, 2000))
        bh, bw = int(rng.integers(1, h // 2)), int(rng.integers(1, w // 2))
        top, left = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        region = np.zeros((h, w), bool)
        region[top : top + bh, left : left + bw] = True
        caplog.clear()
        win = crop_window(region, float(rng.uniform(1.0, 4.0)), 512, name="region 7")
        assert win.x >= 0 and win.y >= 0 and win.x + win.width <= w and win.y + win.height <= h
        assert win.x <= left and win.y <= top and left + bw <= win.x + win.width and top + bh <= win.y + win.height
        assert win.work_width % 64 == 0 and win.work_height % 64 == 0 and _keeps_aspect(win)
        assert max(win.work_width, win.work_height) >= 512 and min(win.work_width, win.work_height) >= 256
        assert max(win.work_width, win.work_height) <= 1536 + 64
        warned = any("region 7: the defect would be" in r.getMessage() for r in caplog.records)
        assert warned == (_defect(win, bw, bh) < 32), (win, bw, bh)
        assert warned == (max(bw, bh) * 32 / min(bw, bh) > 1536)  # only when the region cannot fit otherwise
        assert Window.from_dict(win.to_dict()) == win


def test_window_at_the_photo_edge_and_regions_too_big_for_a_multiple():
    region = square_region(1100, 1500, 100)  # at the bottom-right corner
    win = crop_window(region, 3.0)
    assert (win.x + win.width, win.y + win.height) == (W, H) and win.width == win.height == 300
    small = np.zeros((100, 90), bool)
    small[10:90, 5:80] = True  # the context window is larger than the photo: the whole photo
    win = crop_window(small, 2.0, 64)
    assert (win.x, win.y, win.width, win.height) == (0, 0, 90, 100) and _keeps_aspect(win, 8)


def _stitched_background_is_exact(photo: np.ndarray, region: np.ndarray, window: Window) -> None:
    photo_crop, region_crop = crop(photo, region, window)
    assert photo_crop.shape[:2] == region_crop.shape == window.work_shape
    generated, mask = fake_generate(photo_crop, region_crop)
    image, full_mask = stitch(photo, generated, region, window, mask=mask, feather=4)
    outside = ~grown_region(region, 4)
    assert image.shape == photo.shape and image[outside].tobytes() == photo[outside].tobytes()
    assert full_mask.any() and not full_mask[~region].any()


def test_a_long_thin_scratch_gets_a_long_window_and_stays_visible():
    """1600x40: the old square window showed it 2-3 latent pixels high; now the window is long like the scratch,
    the scratch at least 32 working pixels (4 latent) high, the short side at least 256, the background exact."""
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    region = np.zeros((1500, 2000), bool)
    region[700:740, 200:1800] = True
    win = crop_window(region, 2.0, 512)
    assert _defect(win, 1600, 40) >= 32 and min(win.work_shape) >= 256 and win.work_shape == (256, 1536)
    assert win.work_width / win.work_height >= 4 and win.width / win.height >= 4  # shaped like the scratch
    assert win.work_width % 64 == 0 and win.work_height % 64 == 0 and _keeps_aspect(win)
    _stitched_background_is_exact(photo, region, win)
    upright = crop_window(region.T.copy(), 2.0, 512)  # the same scratch standing up: the window turns with it
    assert (upright.work_width, upright.work_height) == (win.work_height, win.work_width)


def test_a_small_region_is_not_blown_up_8x():
    """12x12: enlarged at most 4x (more context instead), yet at least 32 working pixels across; background exact."""
    photo, region = textured_photo(4), square_region(600, 800, 12)
    win = crop_window(region, 2.0, 512)
    assert _defect(win, 12, 12) >= 32 and win.work_width / win.width <= 4 and win.work_height / win.height <= 4
    assert win.work_shape == (512, 512) and win.width == win.height == 128
    _stitched_background_is_exact(photo, region, win)


def test_a_defect_too_thin_for_any_window_is_named_in_a_warning(caplog):
    region = np.zeros((400, 3000), bool)
    region[200:202, 100:2900] = True  # 2800 x 2: 32 working pixels high would need a 45000 px wide window
    win = crop_window(region, 2.0, 512, name="pair 4, defect 2")
    assert _defect(win, 2800, 2) < 32 and max(win.work_shape) <= 1536
    said = [r.getMessage() for r in caplog.records if "the defect would be" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("pair 4, defect 2: the defect would be 1.0 px (0.1 latent px)")


def test_bad_inputs_say_what_was_expected():
    region = square_region(10, 10)
    with pytest.raises(ValueError, match="context must be a number >= 1"):
        crop_window(region, 0.5)
    with pytest.raises(ValueError, match="region is empty"):
        crop_window(np.zeros((64, 64), bool))
    window = crop_window(region)
    with pytest.raises(ValueError, match="must both have the size"):
        crop(np.zeros((10, 10, 3), np.uint8), region, window)
    with pytest.raises(ValueError, match="working size"):
        stitch(textured_photo(), np.zeros((8, 8, 3), np.float32), region, window)
    with pytest.raises(ValueError, match="blend must be one of"):
        stitch(textured_photo(), np.zeros((8, 8, 3), np.float32), region, window, blend="alpha")
    assert region_box(region) == (10, 10, 120, 120)
    assert stitch_mask(np.ones(window.work_shape), region, window).sum() == region.sum()
