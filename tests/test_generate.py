"""``anodiff.generate`` pieces that need no model: BCM backgrounds and the argument checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anodiff.data.objects import blackened_background
from anodiff.generate.backgrounds import Backgrounds, normal_images
from anodiff.generate.options import check_args, check_name, resolve_dtype


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
    image = cv2.resize(cv2.imread(str(files[0]))[..., ::-1].astype(np.float32) / 255.0, (32, 32),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
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
