"""Training previews: one pair sampled with the live model through the pipeline, saved as global | anomaly | mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.imageio import write_png
from ..data import masks


def render_preview(sd, dual_unet, prompts: tuple[str, str], resolution: int, seed: int, path: Path,
                   steps: int = 20, cfg: float = 2.5) -> Path:  # fmt: skip
    """``dual_unet`` is the training ``DualUNet`` and ``sd`` the base whose text encoder carries the live text LoRA;
    sampling runs the pipeline (the project's one loop, ``anodiff.sd15.sampling.denoise``; DDIM here), in the UNet's
    dtype under mixed precision."""
    from ..sd15.pipeline import DualAnoDiffPipeline

    pipe = DualAnoDiffPipeline.live(sd, dual_unet, prompts)
    pair = pipe(1, resolution, resolution, steps=steps, cfg=cfg, scheduler="ddim", seed=seed, progress=False)
    glob, anomaly = pair.images[0], pair.anomaly_parts[0]
    mask = masks.extract_mask(anomaly, method="grey", min_area=4)
    sheet = np.concatenate([glob, anomaly, np.repeat(mask[..., None].astype(np.float32), 3, axis=2)], axis=1)
    write_png(Path(path), sheet)
    return Path(path)
