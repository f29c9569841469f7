"""``anodiff.generate`` pieces that need no sampling: BCM backgrounds and the argument checks, both done before
SD1.5 loads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anodiff.data.objects import blackened_background
from anodiff.generate.backgrounds import Backgrounds, check_backgrounds, normal_images
from anodiff.generate.options import check_args, check_name, resolve_dtype
from anodiff.generate.run import generate
from anodiff.generate.sources import image_files


class Ramp:
    """Saliency stand-in: a left-to-right ramp in [0, 1]."""

    def saliency(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))


def test_backgrounds_black_out_the_object_as_the_one_blackout_function(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    files = normal_images(tmp_path)
    backgrounds = Backgrounds(files, 32, 2, Ramp())
    first = backgrounds.for_pair(0)
    image = cv2.resize(
        cv2.imread(str(files[0]))[..., ::-1].astype(np.float32) / 255.0, (32, 32), interpolation=cv2.INTER_AREA
    )
    np.testing.assert_array_equal(first, image * (1.0 - Ramp().saliency(image)[..., None]))
    np.testing.assert_array_equal(first, blackened_background(image, Ramp().saliency(image)))
    assert backgrounds.for_pair(1) is first  # pairs 0 and 1 share image 0 (every=2)
    assert not np.array_equal(backgrounds.for_pair(2), first)
    assert np.array_equal(backgrounds.for_pair(4), first)  # (4 // 2) % 2 = 0


def test_argument_checks_name_the_argument():
    check_args(1, 1, 64, "ddim", "grey", 0.5, 1)
    with pytest.raises(ValueError, match="size must be a positive multiple of 8"):
        check_args(1, 1, 60, "ddim", "grey", 0.5, 1)
    with pytest.raises(ValueError, match="background_every"):
        check_args(1, 1, 64, "ddim", "grey", 0.5, 0)
    with pytest.raises(ValueError, match="category must be a plain folder name"):
        check_name("a/b", "category")
    assert resolve_dtype("auto", "cuda:1") == "fp16" and resolve_dtype("auto", "cpu") == "fp32"


def test_region_options_are_checked_before_any_model_loads(tmp_path):
    for kw, says in (
        ({"context": 0.5}, "--context must be a number >= 1"),
        ({"working": 100}, "--working must be a positive multiple of 8"),
        ({"region_size": (0.3, 0.1)}, "--region-size must satisfy 0 < MIN <= MAX <= 1"),
        ({"region_size": (0.0, 0.1)}, "--region-size must satisfy"),
        ({"region_size": (0.1,)}, "--region-size must be two numbers"),
    ):
        with pytest.raises(ValueError, match=says):
            check_args(1, 1, 64, "ddim", "grey", 0.5, 1, **kw)
        with pytest.raises(ValueError, match=says):  # before the (missing) base model and weights are even looked at
            generate(tmp_path / "no_base", tmp_path / "no_weights", tmp_path / "out", 1, **kw)
    check_args(1, 1, 64, "ddim", "grey", 0.5, 1, context=1, working=64, region_size=(0.1, 0.1))


def test_background_listing_skips_dot_files_as_the_photo_listing_does(tmp_path):
    cv2.imwrite(str(tmp_path / "001.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "._001.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    assert normal_images(tmp_path) == image_files(tmp_path) == [tmp_path / "001.png"]


def test_backgrounds_are_decoded_up_front(tmp_path):
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "002.png").write_bytes(b"not a png")
    files = normal_images(tmp_path)
    check_backgrounds(files, range(4), 2)  # pairs 0..3 use files 0 and 1 only
    with pytest.raises(ValueError, match=r"002.png: a --normal-dir background that cannot be decoded"):
        check_backgrounds(files, range(5), 2)  # pair 4 uses file 2


def test_generate_decodes_backgrounds_before_loading_sd15(sd_dir, tmp_path, monkeypatch):
    from test_pipeline import dual_file

    import anodiff.sd15.load

    weights = dual_file(bcm=True).save(tmp_path / "bcm.safetensors")
    normal = tmp_path / "good"
    normal.mkdir()
    cv2.imwrite(str(normal / "000.png"), np.zeros((8, 8, 3), np.uint8))
    (normal / "001.png").write_bytes(b"")  # truncated to nothing

    def never(*args, **kwargs):
        raise AssertionError("SD1.5 was loaded before the backgrounds were checked")

    monkeypatch.setattr(anodiff.sd15.load, "load_sd15", never)
    with pytest.raises(ValueError, match="001.png: a --normal-dir background that cannot be decoded"):
        generate(
            sd_dir,
            weights,
            tmp_path / "out",
            2,
            normal_dir=normal,
            background_every=1,
            size=32,
            mask_method="grey",
            progress=False,
        )
    assert not (tmp_path / "out").exists(), "refused before anything was written"
