"""Tiny SD1.5-shaped ComfyUI models for tests, plus locating the ComfyUI copy.

No SD weights can be fetched here, so tests run on models that have the real SD1.5
topology (same module paths and patch keys, see comfyui-internals.md §7.1) but are
a few channels wide and filled from a seeded generator. ``comfy`` is imported only
inside functions, so this module imports fine where ComfyUI is absent.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFYUI_ENV = "ANODIFF_COMFYUI"
DEFAULT_COMFYUI_DIR = REPO_ROOT / ".cache" / "comfyui"
TEST_NODES_DIR = Path(__file__).resolve().parent / "test_nodes"

TINY_UNET_CONFIG: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1] * 9 + [0] * 3,
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 64,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
"""SD1.5 block layout at model_channels 32 / context_dim 64 (keys as ``detect_unet_config`` emits them)."""

TINY_TEXT_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 64,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 64,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}
"""CLIP-L config shrunk to hidden 64 / 2 layers; the vocabulary stays full so the real SD1 tokenizer works."""

UNET_SEED = 0
CLIP_SEED = 1
VAE_SEED = 2


class ComfyUINotFoundError(RuntimeError):
    """Raised when no ComfyUI checkout is where the tests expect it."""


def comfyui_dir() -> Path:
    """The ComfyUI folder: ``$ANODIFF_COMFYUI`` if set, else ``<repo>/.cache/comfyui``."""
    override = os.environ.get(COMFYUI_ENV)
    return Path(override).expanduser().resolve() if override else DEFAULT_COMFYUI_DIR


def add_comfyui_to_path(path: Path | None = None, *, prepend: bool = False) -> Path:
    """Put ComfyUI's root on ``sys.path`` so ``comfy``, ``folder_paths`` etc. import.

    It is appended by default because the ComfyUI root also holds generic top-level
    names (``nodes.py``, ``utils/``, ``tests/``, ``server.py``) that must not shadow this
    repository's own ``nodes``/``tests`` packages.
    """
    root = (path or comfyui_dir()).resolve()
    if not (root / "comfy" / "model_patcher.py").is_file() or not (root / "main.py").is_file():
        raise ComfyUINotFoundError(
            f"ComfyUI not found at {root}: run `python scripts/fetch_assets.py` "
            f"or set {COMFYUI_ENV} to a ComfyUI checkout (0.3.75 is the reference)"
        )
    entry = str(root)
    if entry not in sys.path:
        if prepend:
            sys.path.insert(0, entry)
        else:
            sys.path.append(entry)
    return root


def init_comfy(*, cpu: bool = True, path: Path | None = None) -> Path:
    """Make ComfyUI importable in-process and pin it to the CPU before device detection.

    ``comfy.cli_args`` parses ``sys.argv`` only when ``comfy.options.args_parsing`` is
    set (``main.py`` sets it), so in-process it parses ``[]`` and pytest's argv is never
    seen. ``comfy.model_management`` picks the device at import, so ``args.cpu`` must
    be set before it is first imported; a later call cannot move it.
    """
    root = add_comfyui_to_path(path)
    if "comfy.model_management" not in sys.modules:
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        comfy.cli_args.args.cpu = cpu
    return root


def fill_deterministic(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter from a seeded generator.

    comfy.ops layers skip weight init (``torch.empty``), so without this the values
    are whatever memory held. Matrices and kernels get U(-1/sqrt(fan_in), +), close to
    torch's default scale; 1-D ``weight``s (norm scales) get 1 + small noise, biases
    small noise. 0-d parameters (TAESD's ``vae_scale``/``vae_shift``) keep their value.
    """
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim == 0:
                continue
            if param.ndim == 1:
                noise = torch.rand(param.shape, generator=generator, dtype=torch.float32) * 0.1 - 0.05
                value = noise + 1.0 if name.rsplit(".", 1)[-1] == "weight" else noise
            else:
                bound = 1.0 / math.sqrt(math.prod(param.shape[1:]))
                value = (torch.rand(param.shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0) * bound
            param.copy_(value.to(param.device, param.dtype))
    return module


def build_tiny_model(seed: int = UNET_SEED, dtype: Any = None) -> Any:
    """A ``ModelPatcher`` over an SD15 ``BaseModel`` with the tiny UNet (8.6 M parameters), float32 by default."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    model_config = comfy.supported_models.SD15(TINY_UNET_CONFIG)
    model_config.set_inference_dtype(dtype or torch.float32, None)
    model = model_config.get_model({})
    fill_deterministic(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


@functools.cache
def _tiny_text_encoder_class() -> type:
    """``SD1ClipModel`` subclass whose CLIP-L is swapped for the tiny text model (built once)."""
    import comfy.sd1_clip

    class TinyClipL(comfy.sd1_clip.SDClipModel):
        """SD1's CLIP-L slot with ``TINY_TEXT_CONFIG``; pooled output unprojected like SD1's checkpoint CLIP."""

        def __init__(self, device: Any = "cpu", dtype: Any = None, model_options: dict | None = None) -> None:
            super().__init__(
                device=device,
                dtype=dtype,
                textmodel_json_config=dict(TINY_TEXT_CONFIG),
                return_projected_pooled=False,
                model_options=model_options or {},
            )

    class TinySD1TextEncoder(comfy.sd1_clip.SD1ClipModel):
        """Text encoder wrapper that ComfyUI's ``CLIP`` instantiates with device/dtype kwargs."""

        def __init__(self, device: Any = "cpu", dtype: Any = None, model_options: dict | None = None) -> None:
            super().__init__(device=device, dtype=dtype, model_options=model_options or {}, clip_model=TinyClipL)

    return TinySD1TextEncoder


def build_tiny_clip(seed: int = CLIP_SEED) -> Any:
    """A ``comfy.sd.CLIP`` with the real SD1 tokenizer and a tiny (hidden 64, 2 layers) text model."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, _tiny_text_encoder_class())
    clip = comfy.sd.CLIP(target, parameters=1)
    fill_deterministic(clip.cond_stage_model, seed)
    return clip


def build_tiny_vae(seed: int = VAE_SEED) -> Any:
    """A ``comfy.sd.VAE`` around a randomly filled TAESD (detected by its ``taesd_decoder.*`` keys)."""
    import comfy.sd
    import comfy.taesd.taesd

    taesd = fill_deterministic(comfy.taesd.taesd.TAESD(), seed)
    return comfy.sd.VAE(sd=taesd.state_dict())


def build_tiny_sd15(seed: int = UNET_SEED) -> tuple[Any, Any, Any]:
    """``(MODEL, CLIP, VAE)`` as a checkpoint loader would return them; ``seed`` offsets all three seeds."""
    return (
        build_tiny_model(UNET_SEED + seed),
        build_tiny_clip(CLIP_SEED + seed),
        build_tiny_vae(VAE_SEED + seed),
    )


def encode_prompt(clip: Any, text: str) -> list:
    """CONDITIONING for ``text``, the way ``CLIPTextEncode`` builds it."""
    tokens = clip.tokenize(text)
    return clip.encode_from_tokens_scheduled(tokens)
