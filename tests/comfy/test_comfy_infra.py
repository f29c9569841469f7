"""Checks that the ComfyUI test harness itself works: tiny model, patch plumbing, headless server."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from tiny import TINY_UNET_CONFIG, build_tiny_model, encode_prompt

SD15_TRANSFORMER_BLOCKS = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sample(model: Any, clip: Any, latent: torch.Tensor, steps: int = 2, cfg: float = 2.0) -> torch.Tensor:
    """Two-step Euler with CFG, as KSampler would call it."""
    import comfy.sample

    positive = encode_prompt(clip, "a photo of a cat")
    negative = encode_prompt(clip, "")
    noise = comfy.sample.prepare_noise(latent, 0)
    return comfy.sample.sample(
        model, noise, steps, cfg, "euler", "normal", positive, negative, latent, disable_pbar=True, seed=0
    )


def test_tiny_model_has_sd15_layout(tiny_sd15: tuple[Any, Any, Any]) -> None:
    """Same config class, block paths and 16 transformer blocks as real SD1.5, at width 32."""
    import comfy.supported_models

    model, _, _ = tiny_sd15
    assert isinstance(model.model.model_config, comfy.supported_models.SD15)
    unet = model.model.diffusion_model
    assert unet.model_channels == TINY_UNET_CONFIG["model_channels"]
    attn1 = [name for name, _ in unet.named_modules() if name.endswith(".attn1")]
    assert len(attn1) == SD15_TRANSFORMER_BLOCKS
    assert "middle_block.1.transformer_blocks.0.attn1" in attn1
    assert model.get_model_object("diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_out.0") is not None


def test_tiny_model_weights_are_deterministic(comfyui_root: object) -> None:
    """Equal seeds give bit-identical weights, different seeds differ, nothing is left uninitialised."""
    first = build_tiny_model(seed=0).model.diffusion_model.state_dict()
    second = build_tiny_model(seed=0).model.diffusion_model.state_dict()
    other = build_tiny_model(seed=5).model.diffusion_model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert all(torch.isfinite(value).all() for value in first.values())
    assert not torch.equal(first["input_blocks.0.0.weight"], other["input_blocks.0.0.weight"])


def test_sample_runs_and_is_finite(tiny_sd15: tuple[Any, Any, Any]) -> None:
    """comfy.sample.sample on an 8x8 latent returns a finite latent of the input shape."""
    model, clip, _ = tiny_sd15
    latent = torch.zeros(1, 4, 8, 8)
    out = _sample(model, clip, latent)
    assert out.shape == (1, 4, 8, 8)
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


def test_attn1_output_patch_runs_in_every_transformer_block(tiny_sd15: tuple[Any, Any, Any]) -> None:
    """A patch on a clone runs 16 times per UNet forward, sees ``cond_or_uncond``, and leaves the original alone."""
    model, clip, _ = tiny_sd15
    calls: list[dict[str, Any]] = []
    forwards: list[list[int]] = []

    def attn1_output_patch(hidden: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        calls.append(
            {
                "cond_or_uncond": list(extra_options["cond_or_uncond"]),
                "block": tuple(extra_options["block"]),
                "transformer_index": extra_options["transformer_index"],
                "rows": hidden.shape[0],
            }
        )
        return hidden

    def count_forwards(apply_model: Any, args: dict[str, Any]) -> torch.Tensor:
        forwards.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = model.clone()
    patched.set_model_attn1_output_patch(attn1_output_patch)
    patched.set_model_unet_function_wrapper(count_forwards)
    assert "attn1_output_patch" not in model.model_options.get("transformer_options", {}).get("patches", {})

    _sample(patched, clip, torch.zeros(1, 4, 8, 8))

    assert forwards, "the UNet never ran"
    assert len(calls) == SD15_TRANSFORMER_BLOCKS * len(forwards)
    assert all(call["cond_or_uncond"] == [1, 0] and call["rows"] == 2 for call in calls)
    per_forward = calls[:SD15_TRANSFORMER_BLOCKS]
    assert [call["transformer_index"] for call in per_forward] == list(range(SD15_TRANSFORMER_BLOCKS))
    blocks = Counter(call["block"][0] for call in per_forward)
    assert blocks == {"input": 6, "middle": 1, "output": 9}
    assert ("middle", 0) in {call["block"] for call in per_forward}


def _txt2img_graph(steps: int = 2, size: int = 64) -> dict[str, Any]:
    """API-format graph: TinySD15Loader -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode ->
    SaveImage."""
    return {
        "1": {"class_type": "TinySD15Loader", "inputs": {"seed": 0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 0,
                "steps": steps,
                "cfg": 2.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "tiny_e2e"}},
    }


@pytest.mark.slow
def test_server_lists_tiny_loader(tiny_server: Any) -> None:
    """The test-only node pack is loaded through the extra_model_paths ``custom_nodes`` entry."""
    info = tiny_server.object_info()
    assert "TinySD15Loader" in info
    assert info["TinySD15Loader"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert "KSampler" in info


@pytest.mark.slow
def test_server_txt2img_writes_png(tiny_server: Any) -> None:
    """POST /prompt runs the tiny txt2img graph end to end and SaveImage writes a 64x64 PNG."""
    entry = tiny_server.run(_txt2img_graph(), timeout=120.0)
    assert entry["status"]["status_str"] == "success"
    files = tiny_server.output_files(entry)
    assert len(files) == 1
    data = files[0].read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (64, 64)
    assert tiny_server.get_bytes(f"/view?filename={files[0].name}&type=output") == data
