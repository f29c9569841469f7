"""The fused inference LoRA add against ``base + branch_lora_delta``."""

from __future__ import annotations

import pytest
import torch

from anodiff.model.lora import branch_lora_delta
from anodiff.model.lora_fused import add_branch_lora


@pytest.mark.parametrize("shape", [(4, 9, 16), (6, 3, 5, 16), (2, 16)])
def test_fused_add_equals_base_plus_delta(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    base = torch.randn(*shape[:-1], 24, generator=g)
    down, up = torch.randn(2, 3, 16, generator=g), torch.randn(2, 24, 3, generator=g)
    ids, scale = torch.tensor([0, 1] * (shape[0] // 2)), torch.tensor([0.7, 1.3])
    want = base + branch_lora_delta(x, ids, down, up, scale)
    with torch.no_grad():
        got = add_branch_lora(base.clone(), x, ids, down, up, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    writable = base.clone()  # without autograd the add goes into the base output itself
    with torch.no_grad():
        assert add_branch_lora(writable, x, ids, down, up, scale).data_ptr() == writable.data_ptr()


def test_fused_add_keeps_gradients_and_mixed_dtypes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 8, generator=g)
    down = torch.randn(2, 2, 8, generator=g, requires_grad=True)
    up = torch.randn(2, 8, 2, generator=g, requires_grad=True)
    base = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    out = add_branch_lora(base, x, torch.tensor([0, 1]), down, up, torch.ones(2))
    out.sum().backward()
    assert up.grad.abs().sum() > 0 and base.grad is not None
    half = add_branch_lora(
        torch.zeros(2, 5, 8, dtype=torch.bfloat16), x, torch.tensor([0, 1]), down.detach(), up.detach(), torch.ones(2)
    )
    assert half.dtype == torch.bfloat16


def test_merged_weights_equal_the_rank_path():
    from anodiff.model.lora_fused import merge_pays, merged_branch_linear

    g = torch.Generator().manual_seed(2)
    linear = torch.nn.Linear(16, 24)
    x = torch.randn(4, 50, 16, generator=g)
    down, up = torch.randn(2, 3, 16, generator=g), torch.randn(2, 24, 3, generator=g)
    ids, scale = torch.tensor([0, 1, 0, 1]), torch.tensor([0.7, 1.3])
    with torch.no_grad():
        want = linear(x) + branch_lora_delta(x, ids, down, up, scale)
        got = merged_branch_linear(x, linear.weight, linear.bias, ids.tolist(), down, up, scale)
        no_bias = merged_branch_linear(x, linear.weight, None, [0, 0, 0, 0], down, up, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(no_bias, x @ (linear.weight + 0.7 * up[0] @ down[0]).T, atol=1e-5, rtol=1e-5)
    assert merge_pays(4 * 4096, 320, 320) and not merge_pays(4 * 77, 768, 320) and not merge_pays(4 * 256, 1280, 1280)
