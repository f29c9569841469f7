from __future__ import annotations

import math

import pytest
import torch

from anodiff.model.saim import SAIM


def naive_saim_delta(m: SAIM, out: torch.Tensor) -> torch.Tensor:
    """Per-position reference: for every pair and token, attend over (global token, anomaly token)."""
    x = m.proj_in(m.norm(out))
    result = torch.zeros_like(out)
    for p in range(out.shape[0] // 2):
        for n in range(out.shape[1]):
            seq = torch.stack([x[2 * p, n], x[2 * p + 1, n]])  # (2, C)
            q, k, v = m.to_q(seq), m.to_k(seq), m.to_v(seq)
            weights = torch.softmax(q @ k.T / math.sqrt(m.dim), dim=-1)
            mixed = m.proj_out(weights @ v)
            result[2 * p, n], result[2 * p + 1, n] = mixed[0], mixed[1]
    return result


def test_matches_per_position_reference():
    torch.manual_seed(0)
    m = SAIM(16)
    with torch.no_grad():
        m.norm.weight.normal_()
        m.norm.bias.normal_()
    out = torch.randn(4, 5, 16)
    torch.testing.assert_close(m(out), out + naive_saim_delta(m, out), atol=1e-5, rtol=1e-5)


def test_defaults_follow_authors_and_zero_init_is_identity():
    out = torch.randn(2, 3, 8)
    assert not torch.allclose(SAIM(8)(out), out)  # default init perturbs from step 0, as in the official code
    assert SAIM(8).norm.eps == 1e-6
    torch.testing.assert_close(SAIM(8, zero_init_out=True)(out), out)


def test_pairs_do_not_mix_with_other_pairs_or_positions():
    torch.manual_seed(0)
    m = SAIM(8)
    out = torch.randn(4, 3, 8)
    changed = out.clone()
    changed[3, 1] += 1.0  # anomaly row of pair 1, token 1
    diff = (m(changed) - m(out)).abs().sum(-1)
    assert diff[2, 1] > 0 and diff[3, 1] > 0  # its partner at the same position sees it
    mask = torch.ones_like(diff, dtype=torch.bool)
    mask[2, 1] = mask[3, 1] = False
    assert torch.count_nonzero(diff[mask]) == 0


def test_half_precision_and_errors():
    m = SAIM(8)
    for dtype in (torch.float16, torch.bfloat16):
        assert m(torch.randn(2, 3, 8).to(dtype)).dtype == dtype
    with pytest.raises(ValueError, match="even number of rows"):
        m(torch.randn(3, 2, 8))
    with pytest.raises(ValueError, match=r"\(rows, tokens, 8\)"):
        m(torch.randn(2, 8))
    with pytest.raises(ValueError, match="expected shape"):
        m(torch.randn(2, 3, 9))


def test_gradients_equal_the_per_position_reference_in_float64():
    """Training runs this form: its parameter and input gradients are those of the authors' two-key softmax."""
    torch.manual_seed(0)
    m = SAIM(8).double()
    with torch.no_grad():
        m.norm.weight.normal_()
        m.norm.bias.normal_()
    out = torch.randn(4, 3, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 3, 8, dtype=torch.float64)
    grads = []
    for delta in (m.delta, lambda x: naive_saim_delta(m, x)):
        m.zero_grad()
        out.grad = None
        (delta(out) * weights).sum().backward()
        grads.append([out.grad.clone()] + [p.grad.clone() for p in m.parameters()])  # every parameter used (DDP)
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-10)
