"""Training previews, for every host: one pair sampled with the live model (20 DDIM steps, cfg 2.5, the run's seed)
and laid out by ``preview_sheet`` as global | anomaly | mask. ``anodiff train`` samples through the pipeline and
writes the sheet as a PNG (``render_preview``); Train Dual LoRA samples with ComfyUI's sampler and shows the same
sheet on the progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.imageio import write_png
from ..data import masks

PREVIEW_STEPS, PREVIEW_CFG = 20, 2.5


def preview_sheet(glob: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """(H, W, 3) global and anomaly images in [0, 1] -> (H, 3W, 3) float sheet: global | anomaly | its mask (grey
    distance, as Extract Anomaly Mask's fallback: no U²-Net needed while training)."""
    mask = masks.extract_mask(anomaly, method="grey", min_area=4)
    return np.concatenate([glob, anomaly, np.repeat(mask[..., None].astype(np.float32), 3, axis=2)], axis=1)


def render_preview(sd, dual_unet, prompts: tuple[str, str], resolution: int, seed: int, path: Path,
                   steps: int = PREVIEW_STEPS, cfg: float = PREVIEW_CFG) -> Path:  # fmt: skip
    """``dual_unet`` is the training ``DualUNet`` and ``sd`` the base whose text encoder carries the live text LoRA;
    sampling runs the pipeline (the project's one loop, ``anodiff.sd15.sampling.denoise``; DDIM here), in the UNet's
    dtype under mixed precision."""
    from ..sd15.pipeline import DualAnoDiffPipeline

    pipe = DualAnoDiffPipeline.live(sd, dual_unet, prompts)
    pair = pipe(1, resolution, resolution, steps=steps, cfg=cfg, scheduler="ddim", seed=seed, progress=False)
    write_png(Path(path), preview_sheet(pair.images[0], pair.anomaly_parts[0]))
    return Path(path)
