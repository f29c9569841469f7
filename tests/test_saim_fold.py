"""SAIM folded for inference (anodiff.model.saim_fold) against the unfolded SAIM the trainer uses."""

from __future__ import annotations

import pytest
import torch
from official_reference import install_official
from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, randomize_, tiny_unet

from anodiff import DualAdapter, DualConfig, load_dual
from anodiff.model.saim import SAIM
from anodiff.model.saim_fold import FoldCache, FoldedSAIM, inference_adapter
from anodiff.sd15.processor import DualUNet, UNetPass

HALF_TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 2e-2}
"""Stated tolerance: max |folded half - unfolded fp32| / max |unfolded fp32 delta| at width 320 with PyTorch's
default init (measured: fp16 5.4e-4, bf16 5.5e-3; the unfolded SAIM run in the same dtype: 6.0e-4 and 5.2e-3)."""


def random_saim(dim: int, seed: int = 0) -> SAIM:
    torch.manual_seed(seed)
    m = SAIM(dim)
    with torch.no_grad():
        m.norm.weight.normal_(1.0, 0.3)
        m.norm.bias.normal_(0.0, 0.3)
        for layer in (m.proj_in, m.to_q, m.to_k, m.to_v, m.proj_out):
            layer.bias.normal_(0.0, 0.3)
    return m


def activations(dim: int, rows: int = 4, tokens: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, tokens, dim, generator=torch.Generator().manual_seed(seed)) * 3 + 0.5


@pytest.mark.parametrize("dim", [8, 64, 320])
def test_folded_equals_unfolded_fp32(dim):
    saim, x = random_saim(dim), activations(dim)
    folded = FoldedSAIM.from_saim(saim)
    with torch.no_grad():
        torch.testing.assert_close(folded.delta(x), saim.delta(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded(x, 0.7), saim(x, 0.7), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in folded.parameters()) < 0.45 * sum(p.numel() for p in saim.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_folded_half_precision_stays_close_to_fp32_unfolded(dtype):
    dim = 320  # SD1.5's narrowest SAIM, weights at PyTorch's default scale as the authors initialise them
    saim, x = random_saim(dim), activations(dim, rows=4, tokens=64)
    with torch.no_grad():
        want = saim.delta(x)
        folded = FoldedSAIM.from_saim(saim).to(dtype)
        got = folded.delta(x.to(dtype)).float()
        unfolded_half = SAIM(dim).to(dtype)
        unfolded_half.load_state_dict(saim.state_dict())
        plain_error = (unfolded_half.delta(x.to(dtype)).float() - want).abs().max()
    error = (got - want).abs().max() / want.abs().max()
    assert torch.isfinite(got).all()
    assert error < HALF_TOLERANCE[dtype], f"{dtype}: relative error {error:.2e}"
    assert (got - want).abs().max() < 1.5 * plain_error  # folding costs about what running unfolded in half does


def test_processor_folds_at_inference_only_and_equals_unfolded():
    import copy

    from anodiff.sd15.processor import install

    adapter = randomize_(DualAdapter(DualConfig(rank=4), TINY_CHANNELS, TINY_CONTEXT), std=0.05)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 7, TINY_CONTEXT, generator=g)
    folded_unet, plain_unet, exact_unet = DualUNet(tiny_unet(), adapter), tiny_unet(), tiny_unet().double()
    install(plain_unet, adapter, fold_saim=False)
    install(exact_unet, copy.deepcopy(adapter).double(), fold_saim=False)
    with torch.no_grad():
        folded = folded_unet(x, 250, ctx, unet_pass=UNetPass())
        unfolded = plain_unet(x, 250, ctx, cross_attention_kwargs={"dual": UNetPass()}, return_dict=False)[0]
        exact = exact_unet(
            x.double(), 250, ctx.double(), cross_attention_kwargs={"dual": UNetPass()}, return_dict=False
        )[0]
        no_saim = folded_unet(x, 250, ctx, unet_pass=UNetPass(saim=False))
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded.double(), exact, atol=1e-5, rtol=1e-5)
    assert (folded - no_saim).abs().max() > 1e-3
    # with gradients on (training) SAIM runs unfolded, so its own weights get gradients
    folded_unet(x, 250, ctx, unet_pass=UNetPass()).square().mean().backward()
    saim = next(layer.saim for _, layer in adapter.items())
    assert saim.to_q.weight.grad is not None and saim.to_q.weight.grad.abs().max() > 0


def test_fold_cache_refolds_after_a_weight_update():
    saim, x = random_saim(16), activations(16)
    cache = FoldCache()
    first = cache.get(saim, x)
    assert cache.get(saim, x) is first
    with torch.no_grad():
        saim.to_k.weight.mul_(2.0)
        refolded = cache.get(saim, x)
        assert refolded is not first
        torch.testing.assert_close(refolded.delta(x), saim.delta(x), atol=1e-5, rtol=1e-5)


def test_authors_file_folds_exactly(tmp_path):
    _, official = install_official(tiny_unet(), rank=4, bcm=False)
    torch.save(official, tmp_path / "pytorch_lora_weights.bin")
    adapter = load_dual(tmp_path / "pytorch_lora_weights.bin", sd15_only=False).adapter()
    frozen = inference_adapter(adapter)
    checked = 0
    for site, layer in adapter.items():
        folded = frozen.layer(site).saim
        assert isinstance(folded, FoldedSAIM) and isinstance(layer.saim, SAIM)  # the original is left unfolded
        x = activations(layer.dim, tokens=5, seed=checked)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), layer.saim(x), atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked == 32
    lora = next(iter(frozen.items()))[1].to_q
    assert not lora.down.requires_grad and lora.down.dtype == torch.float32


def test_in_place_forward_equals_the_plain_one():
    saim, x = random_saim(32), activations(32)
    folded = FoldedSAIM.from_saim(saim)
    with torch.no_grad():
        want = folded(x, 0.5)
        work = x.clone()
        got = folded(work, 0.5, inplace=True)
    assert got.data_ptr() == work.data_ptr()  # accumulated into the attention output itself
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(want, saim(x, 0.5).detach(), atol=1e-5, rtol=1e-5)


def test_fold_cache_drops_the_folds_of_old_weights():
    saim, x = random_saim(16), activations(16)
    cache = FoldCache()
    cache.get(saim, x)
    cache.get(saim, x.double())
    assert len(cache) == 2  # one fold per dtype the same weights run in
    with torch.no_grad():
        saim.to_q.weight.add_(0.5)
    refolded = cache.get(saim, x)
    assert len(cache) == 1  # the float64 fold of the old weights is gone, not kept
    torch.testing.assert_close(refolded.delta(x), saim.delta(x).detach(), atol=1e-5, rtol=1e-5)


def test_fold_cache_under_inference_mode():
    """Weights made under ``torch.inference_mode()`` are inference tensors: no version counter to read."""
    want = random_saim(16)
    x = activations(16)
    with torch.inference_mode():
        saim = random_saim(16)
        assert next(saim.parameters()).is_inference()
        cache = FoldCache()
        first = cache.get(saim, x)
        assert cache.get(saim, x) is first
        got = first.delta(x)
    with torch.no_grad():
        torch.testing.assert_close(got, want.delta(x), atol=1e-5, rtol=1e-5)
