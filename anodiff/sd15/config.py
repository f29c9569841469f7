"""SD1.5's component configs, so a single-file checkpoint loads offline (``from_single_file`` needs a config folder).

The tokenizer files (vocab.json, merges.txt) are not bundled: they come from ComfyUI's ``comfy/sd1_tokenizer``
(found when this pack sits in ``ComfyUI/custom_nodes``), from ``$ANODIFF_SD_TOKENIZER``, or from a path given.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDPMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
TOKENIZER_FILES = ("vocab.json", "merges.txt")
TOKENIZER_ENV = "ANODIFF_SD_TOKENIZER"


def tokenizer_candidates() -> list[Path]:
    here = Path(__file__).resolve().parents[2]  # the pack / repository root
    found = [Path(os.environ[TOKENIZER_ENV])] if os.environ.get(TOKENIZER_ENV) else []
    found.append(here.parent.parent / "comfy" / "sd1_tokenizer")  # <ComfyUI>/custom_nodes/<pack>
    found.append(here / ".cache" / "comfyui" / "comfy" / "sd1_tokenizer")  # a checkout after scripts/fetch_assets.py
    return found


def find_tokenizer(explicit: str | os.PathLike | None = None) -> Path:
    """A folder with SD1.5's CLIP vocab.json and merges.txt."""
    for folder in [Path(explicit)] if explicit else tokenizer_candidates():
        if all((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    searched = ", ".join(str(p) for p in ([Path(explicit)] if explicit else tokenizer_candidates()))
    raise FileNotFoundError(
        f"SD1.5 tokenizer (vocab.json + merges.txt) not found (searched {searched}); a single-file checkpoint carries "
        f"none. Point {TOKENIZER_ENV} at ComfyUI's comfy/sd1_tokenizer folder or any SD1.5 diffusers 'tokenizer' folder"
    )


def write_config_folder(target: Path, tokenizer: Path) -> Path:
    """A weightless diffusers SD1.5 folder (configs + tokenizer) for ``from_single_file(config=...)``."""
    target = Path(target)
    files = {
        "model_index.json": MODEL_INDEX,
        "unet/config.json": UNET,
        "vae/config.json": VAE,
        "text_encoder/config.json": TEXT_ENCODER,
        "scheduler/scheduler_config.json": SCHEDULER,
        "tokenizer/tokenizer_config.json": {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"},
    }
    for name, content in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=1))
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer / name, target / "tokenizer" / name)
    return target
