from __future__ import annotations

import numpy as np
import pytest

from anodiff.regions.composite import clip_mask, composite, feather_weights


def region(h=40, w=50):
    r = np.zeros((h, w), np.float32)
    r[10:25, 15:30] = 1
    return r


@pytest.mark.parametrize("feather", [0, 1, 4, 7])
def test_outside_the_dilated_region_is_exactly_the_source(feather):
    rng = np.random.default_rng(0)
    source, generated = rng.random((40, 50, 3)).astype(np.float32), rng.random((40, 50, 3)).astype(np.float32)
    out = composite(generated, source, region(), feather)
    far = np.ones((40, 50), bool)
    far[10 - feather : 25 + feather, 15 - feather : 30 + feather] = False
    assert np.abs(out[far] - source[far]).max() == 0
    inner = (slice(10 + feather, 25 - feather), slice(15 + feather, 30 - feather))
    np.testing.assert_allclose(out[inner], generated[inner], atol=1e-6)


def test_weights_ramp_and_errors():
    w = feather_weights(region(), 4)
    assert w.min() == 0 and w.max() == 1 and 0 < w[8, 20] < 1  # a soft edge just outside the region
    with pytest.raises(ValueError, match="feather"):
        feather_weights(region(), -1)
    with pytest.raises(ValueError, match="same size"):
        composite(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), np.zeros((4, 4)))


def test_mask_is_clipped_to_the_region():
    mask = np.zeros((40, 50))
    mask[5:15, 5:20] = 1
    clipped = clip_mask(mask, region())
    assert clipped.sum() == 5 * 5 and clipped[10:15, 15:20].all()
