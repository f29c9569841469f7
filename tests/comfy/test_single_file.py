"""SD1.5 from one checkpoint file: a tiny LDM-format file (written with ComfyUI's key maps) loads like its folder."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, save_tiny_sd15

from anodiff.sd15.config import UNET, find_tokenizer, write_config_folder
from anodiff.sd15.load import BaseModelError, load_sd15


def ldm_checkpoint(sd, path):
    """unet/vae/text encoder of a loaded tiny SD15 in the original (LDM) single-file key layout."""
    import comfy.diffusers_convert
    import comfy.utils

    config = {
        "num_res_blocks": [2] * 4,
        "channel_mult": [c // TINY_CHANNELS[0] for c in TINY_CHANNELS],
        "transformer_depth": [1] * 6 + [0, 0],
        "transformer_depth_output": [1] * 9 + [0] * 3,
        "model_channels": TINY_CHANNELS[0],
        "context_dim": TINY_CONTEXT,
        "num_heads": 8,
        "num_head_channels": -1,
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
    }
    unet = sd.unet.state_dict()
    out = {
        f"model.diffusion_model.{ldm}": unet[key]
        for key, ldm in comfy.utils.unet_to_diffusers(config).items()
        if key in unet
    }
    levels = len(sd.vae.config.block_out_channels)
    for key, value in comfy.diffusers_convert.convert_vae_state_dict(sd.vae.state_dict()).items():
        for i in range(levels):  # ComfyUI's map assumes SD's 4 decoder levels (up.{3-i}); ours has 2
            key = key.replace(f"decoder.up.{3 - i}.", f"decoder.up.{levels - 1 - i}.")
        out[f"first_stage_model.{key}"] = value
    prefix = "" if hasattr(sd.text_encoder, "text_model") else "text_model."
    out.update({f"cond_stage_model.transformer.{prefix}{k}": v for k, v in sd.text_encoder.state_dict().items()})
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return path


def test_single_file_loads_like_the_folder(comfyui_root, tmp_path):
    folder = save_tiny_sd15(tmp_path / "sd15")
    want = load_sd15(folder)
    got = load_sd15(ldm_checkpoint(want, tmp_path / "tiny.safetensors"), config=folder)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 7, TINY_CONTEXT)
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        torch.testing.assert_close(got.unet(x, 10, ctx).sample, want.unet(x, 10, ctx).sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.vae.decode(x[:1]).sample, want.vae.decode(x[:1]).sample, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.text_encoder(ids)[0], want.text_encoder(ids)[0], atol=1e-6, rtol=1e-6)
    assert got.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_bundled_sd15_configs_describe_sd15(comfyui_root, tmp_path):
    from diffusers import UNet2DConditionModel

    folder = write_config_folder(tmp_path / "cfg", find_tokenizer())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    assert tuple(unet.config.block_out_channels) == tuple(UNET["block_out_channels"])
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD1.5's UNet


def test_a_file_that_is_not_sd15_is_refused(comfyui_root, tmp_path):
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}, tmp_path / "odd.safetensors"
    )
    with pytest.raises(BaseModelError, match="odd.safetensors: cannot read it as a Stable Diffusion 1.5"):
        load_sd15(tmp_path / "odd.safetensors")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(BaseModelError, match="expected a .safetensors or .ckpt"):
        load_sd15(tmp_path / "model.bin")
