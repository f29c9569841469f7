"""Read a DualAnoDiff model from disk, whichever format it is in: ours, or the authors' (through the converter)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .convert import convert_official, describe_foreign, looks_official
from .metadata import from_metadata
from .schema import FORMAT, DualFile, DualWeightsError


def load_dual(path: str | os.PathLike, sd15_only: bool = True) -> DualFile:
    """Read our ``.safetensors`` or the authors' ``pytorch_lora_weights.bin``; validate against the schema.

    Our files describe their own widths in the metadata. The authors' files carry none, so they are checked
    against SD1.5's widths unless ``sd15_only=False`` (any UNet with SD1.5's block layout, e.g. test models).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"DualAnoDiff weights not found: {source}")
    if path.suffix.lower() in (".bin", ".pt", ".pth", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DualWeightsError(
                f"{source}: cannot read as a PyTorch state dict ({exc.__class__.__name__}: {exc})"
            ) from exc
        if not isinstance(state, dict):
            raise DualWeightsError(f"{source}: expected a state dict of tensors, got {type(state).__name__}")
        return convert_official(state, source, sd15_only)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has keys() but no __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DualWeightsError(f"{source}: not a readable .safetensors file ({exc}); truncated download?") from exc
    if meta.get("format") == FORMAT:
        return from_metadata(tensors, meta, source)
    if looks_official(tensors):
        return convert_official(tensors, source, sd15_only)
    raise DualWeightsError(describe_foreign(tensors, source))
