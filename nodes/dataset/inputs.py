"""IMAGE/MASK inputs as numpy batches and output folders confined to ComfyUI's output folder: what the dataset
and region nodes share to read their inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def image_array(image: torch.Tensor, node: str, name: str) -> np.ndarray:
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{node}: {name} must be an IMAGE (B, H, W, 3), got {tuple(image.shape)}")
    return image[..., :3].detach().to("cpu", torch.float32).numpy()


def mask_batch(mask: torch.Tensor) -> np.ndarray:
    """A MASK as ``(B, H, W)`` float32 numpy on the CPU (a single ``(H, W)`` mask gets a batch of 1)."""
    m = mask.detach().to("cpu", torch.float32).numpy()
    return m[None] if m.ndim == 2 else m


def mask_array(mask: torch.Tensor, count: int, node: str, name: str, shared: bool = False) -> np.ndarray:
    """``(count, H, W)`` float masks; ``shared`` lets one mask stand for every image."""
    mask = mask[None] if mask.ndim == 2 else mask
    if mask.ndim != 3:
        raise ValueError(f"{node}: {name} must be a MASK (B, H, W), got {tuple(mask.shape)}")
    if mask.shape[0] != count and not (shared and mask.shape[0] == 1):
        give = "one, or one per image" if shared else "one per image"
        raise ValueError(f"{node}: {name} holds {mask.shape[0]} mask(s) for {count} image(s); give {give}")
    out = mask.detach().to("cpu", torch.float32).numpy()
    return np.repeat(out, count, axis=0) if out.shape[0] != count else out


def output_root(output_dir: str, node: str = "Export Dataset") -> Path:
    """``output_dir`` inside ComfyUI's output folder, resolved; a path that leads outside it is a ValueError
    naming ``node``."""
    import folder_paths

    base = Path(folder_paths.get_output_directory()).resolve()
    if not output_dir or not output_dir.strip():
        raise ValueError(f"{node}: output_dir is empty; name a folder inside ComfyUI's output folder")
    target = (base / output_dir.strip()).resolve()
    if target == base:
        raise ValueError(f"{node}: output_dir {output_dir!r} is the output folder itself; name a folder in it")
    if base not in target.parents:
        raise ValueError(
            f"{node}: output_dir {output_dir!r} leads outside ComfyUI's output folder {base}; "
            "give a folder relative to it, without '..'"
        )
    return target
