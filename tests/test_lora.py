from __future__ import annotations

import pytest
import torch

from anodiff.model.lora import BranchLoRA
from anodiff.model.pairs import branch_ids


def naive_delta(lora: BranchLoRA, x: torch.Tensor, ids: torch.Tensor, strengths) -> torch.Tensor:
    """Per-row reference: the official loop picks LoRA[i] for each row by branch."""
    rows = []
    for r in range(x.shape[0]):
        b = int(ids[r])
        rows.append(x[r] @ lora.down[b].T @ lora.up[b].T * lora.scale * strengths[b])
    return torch.stack(rows)


def make(rank=4, alpha=None, seed=0):
    torch.manual_seed(seed)
    lora = BranchLoRA(12, 10, rank=rank, alpha=alpha)
    with torch.no_grad():
        lora.up.normal_()
    return lora


def test_fresh_lora_is_identity():
    lora = BranchLoRA(12, 10, rank=4)
    x = torch.randn(4, 5, 12)
    assert torch.count_nonzero(lora(x, branch_ids(4))) == 0
    assert lora.down.std().item() == pytest.approx(1 / 4, rel=0.2)


@pytest.mark.parametrize("shape", [(6, 12), (6, 7, 12), (4, 3, 5, 12)])
def test_matches_per_row_reference(shape):
    lora = make(alpha=8.0)
    x = torch.randn(*shape)
    ids = torch.tensor([0, 1, 1, 0, 0, 1][: shape[0]])
    got = lora(x, ids, strengths=(0.7, 1.3))
    want = naive_delta(lora, x, ids, (0.7, 1.3))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_branches_use_their_own_factors():
    lora = make()
    x = torch.randn(1, 3, 12).repeat(2, 1, 1)
    out = lora(x, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])
    zero_anomaly = lora(x, torch.tensor([0, 1]), strengths=(1.0, 0.0))
    torch.testing.assert_close(zero_anomaly[0], out[0])
    assert torch.count_nonzero(zero_anomaly[1]) == 0


def test_alpha_scales_delta():
    x, ids = torch.randn(2, 12), torch.tensor([0, 1])
    a = make(rank=4, alpha=4.0)(x, ids)
    b = make(rank=4, alpha=8.0)(x, ids)
    torch.testing.assert_close(b, 2 * a)


def test_half_precision_input_keeps_dtype():
    lora = make()
    for dtype in (torch.float16, torch.bfloat16):
        out = lora(torch.randn(2, 3, 12).to(dtype), torch.tensor([0, 1]))
        assert out.dtype == dtype


def test_errors_are_clear():
    lora = make()
    with pytest.raises(ValueError, match=r"expected shape \(rows, \.\.\., 12\)"):
        lora(torch.randn(2, 11), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="floating point"):
        lora(torch.ones(2, 12, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="branch_ids must have shape"):
        lora(torch.randn(3, 12), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one value per branch"):
        lora(torch.randn(2, 12), torch.tensor([0, 1]), strengths=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="rank must be"):
        BranchLoRA(4, 4, rank=8)
