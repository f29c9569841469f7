from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, randomize_, tiny_unet

from anodiff import DualAdapter, DualConfig
from anodiff.model.sites import SD15_SITES
from anodiff.sd15.processor import DualUNet, UNetPass, install


def inputs(pairs=2, seed=0, hw=(8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * pairs, 4, *hw, generator=g), torch.randn(2 * pairs, 7, TINY_CONTEXT, generator=g)


def dual(unet, **cfg):
    adapter = randomize_(DualAdapter(DualConfig(rank=4, **cfg), TINY_CHANNELS, TINY_CONTEXT))
    return DualUNet(unet, adapter).requires_grad_(False)


def test_adapter_covers_the_32_sd15_attentions(fresh_unet):
    adapter = DualAdapter(DualConfig(rank=4), TINY_CHANNELS, TINY_CONTEXT)
    processors = install(fresh_unet, adapter)
    assert len(processors) == 32 == len(SD15_SITES)
    assert sum(s.is_self for s in SD15_SITES) == 16


def test_zero_lora_without_saim_and_bcm_equals_vanilla_unet(fresh_unet):
    x, ctx = inputs()
    with torch.no_grad():
        vanilla = fresh_unet(x, 500, ctx).sample
        model = dual(fresh_unet, saim=True, bcm=True)
        model.adapter.zero_lora_()
        out = model(x, 500, ctx, unet_pass=UNetPass(saim=False))
    torch.testing.assert_close(out, vanilla, atol=1e-5, rtol=0)


def test_saim_off_keeps_branches_independent_and_saim_on_couples_them(fresh_unet):
    model = dual(fresh_unet)
    x, ctx = inputs()
    x2 = x.clone()
    x2[1] += torch.randn_like(x2[1])  # change only the anomaly row of pair 0
    with torch.no_grad():
        off = [model(v, 300, ctx, unet_pass=UNetPass(saim=False)) for v in (x, x2)]
        on = [model(v, 300, ctx) for v in (x, x2)]
    torch.testing.assert_close(off[0][0], off[1][0], atol=0, rtol=0)
    assert (on[0][0] - on[1][0]).abs().max() > 1e-4
    # pair 1 never sees pair 0, with or without SAIM
    torch.testing.assert_close(on[0][2:], on[1][2:], atol=0, rtol=0)


def test_per_branch_lora_matches_two_single_branch_runs(fresh_unet):
    """With SAIM off, each row equals a UNet where every row carries that branch's LoRA."""
    model = dual(fresh_unet, saim=False)
    x, ctx = inputs()
    with torch.no_grad():
        both = model(x, 200, ctx)
        all_global = model(x, 200, ctx, unet_pass=UNetPass(mode="write"))  # write mode: branch 0 LoRA on every row
        only_anomaly = model(x, 200, ctx, unet_pass=UNetPass(strengths=(0.0, 1.0)))
        base = model(x, 200, ctx, unet_pass=UNetPass(strengths=(0.0, 0.0)))
    torch.testing.assert_close(both[0::2], all_global[0::2], atol=1e-6, rtol=0)
    torch.testing.assert_close(only_anomaly[1::2], both[1::2], atol=1e-6, rtol=0)
    torch.testing.assert_close(only_anomaly[0::2], base[0::2], atol=1e-6, rtol=0)
    assert (both[0::2] - base[0::2]).abs().max() > 1e-4


def test_cfg_chunks_match_separate_chunks(fresh_unet):
    model = dual(fresh_unet).double()  # float64: fp32 CPU matmuls differ by ~1e-4 between batch sizes
    x, ctx = (t.double() for t in inputs(pairs=2))
    with torch.no_grad():
        joint = model(x, 100, ctx, unet_pass=UNetPass(chunks=2))
        first = model(x[:2], 100, ctx[:2])
        second = model(x[2:], 100, ctx[2:])
    torch.testing.assert_close(joint, torch.cat([first, second]), atol=1e-10, rtol=0)


def test_bcm_changes_global_rows_only(fresh_unet):
    model = dual(fresh_unet, bcm=True)
    with torch.no_grad():
        for layer in model.adapter.values():
            if layer.bcm is not None:
                layer.bcm.a.fill_(0.3)
        x, ctx = inputs()
        bg = torch.randn(2, 4, 8, 8)
        plain = model(x, 400, ctx, unet_pass=UNetPass(saim=False))
        with_bg = model(x, 400, ctx, unet_pass=UNetPass(saim=False), background=bg)
        half = model(x, 400, ctx, unet_pass=UNetPass(saim=False, bcm_strength=0.0), background=bg)
    assert (with_bg[0::2] - plain[0::2]).abs().max() > 1e-4
    torch.testing.assert_close(with_bg[1::2], plain[1::2], atol=1e-6, rtol=0)
    torch.testing.assert_close(half, plain, atol=1e-6, rtol=0)


def test_errors(fresh_unet):
    model = dual(fresh_unet)
    x, ctx = inputs()
    with pytest.raises(ValueError, match="even number of rows"):
        model(x[:3], 10, ctx[:3])
    with pytest.raises(ValueError, match="encoder_hidden_states has 3 rows"):
        model(x, 10, ctx[:3])
    with pytest.raises(ValueError, match="without BCM"):
        model(x, 10, ctx, background=torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        replace(UNetPass(), mode="both")
    wrong = DualAdapter(DualConfig(rank=4), (32, 64, 128, 128), TINY_CONTEXT)
    with pytest.raises(
        ValueError, match=r"down_blocks\.2\.attentions\.0\.transformer_blocks\.0\.attn1: UNet attention has"
    ):
        install(tiny_unet(), wrong)


def test_rejects_unet_without_sd15_layout():
    from diffusers import UNet2DConditionModel

    small = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=TINY_CONTEXT,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
    )
    with pytest.raises(ValueError, match="SD1.5 block layout"):
        install(small, DualAdapter(DualConfig(rank=4), TINY_CHANNELS, TINY_CONTEXT))


def test_mixed_precision_runs_without_dtype_errors(fresh_unet):
    model = dual(fresh_unet, bcm=True)
    x, ctx = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, 10, ctx, background=torch.randn(2, 4, 8, 8))
    assert torch.isfinite(out).all()
    bf16 = DualUNet(tiny_unet().to(torch.bfloat16), model.adapter)  # adapter stays fp32, UNet in bf16
    with torch.no_grad():
        out = bf16(x.bfloat16(), 10, ctx.bfloat16(), background=torch.randn(2, 4, 8, 8).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_gradients_reach_lora_saim_and_bcm(fresh_unet):
    adapter = DualAdapter(DualConfig(rank=4, bcm=True), TINY_CHANNELS, TINY_CONTEXT)
    model = DualUNet(fresh_unet, adapter)
    x, ctx = inputs()
    model(x, 10, ctx, background=torch.randn(2, 4, 8, 8)).square().mean().backward()
    layer = adapter.layer(SD15_SITES[0])
    assert layer.to_q.up.grad.abs().sum() > 0  # up starts at 0 but receives gradient
    assert layer.saim.proj_out.weight.grad.abs().sum() > 0
    assert layer.bcm.a.grad.abs().sum() > 0
