from __future__ import annotations

import pytest
import torch

from anodiff.model.bcm import BackgroundCompensation


def make(dim=8, a=0.3):
    torch.manual_seed(0)
    m = BackgroundCompensation(dim)
    with torch.no_grad():
        m.a.fill_(a)
    return m


def test_a_starts_at_zero_and_mlp_shape():
    m = BackgroundCompensation(16)
    assert m.a.item() == 0.0
    assert [tuple(layer.weight.shape) for layer in m.mlp] == [(320, 16), (16, 320)]
    h, bg = torch.randn(4, 5, 16), torch.randn(2, 5, 16)
    torch.testing.assert_close(m.kv_source(h, bg), h)


def test_mixes_global_rows_only_with_their_pair_background():
    m = make()
    h, bg = torch.randn(4, 5, 8), torch.randn(2, 5, 8)
    out = m.kv_source(h, bg)
    for p in range(2):
        want = 0.7 * h[2 * p] + 0.3 * m.mlp(bg[p])  # no activation between the two linears
        torch.testing.assert_close(out[2 * p], want)
        torch.testing.assert_close(out[2 * p + 1], h[2 * p + 1])


def test_shared_background_and_strength():
    m = make()
    h, bg = torch.randn(4, 5, 8), torch.randn(1, 5, 8)
    out = m.kv_source(h, bg, strength=0.5)
    torch.testing.assert_close(out[2], 0.85 * h[2] + 0.15 * m.mlp(bg[0]))


def test_errors():
    m = make()
    with pytest.raises(ValueError, match="one background row per pair"):
        m.kv_source(torch.randn(4, 5, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="same size"):
        m.kv_source(torch.randn(4, 5, 8), torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="even number of rows"):
        m.kv_source(torch.randn(3, 5, 8), torch.randn(1, 5, 8))
