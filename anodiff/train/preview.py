"""Training previews, for every host: one pair sampled with the live model (20 DDIM steps, cfg 2.5, the run's seed)
and laid out by ``preview_sheet`` as global | anomaly | mask. ``anodiff train`` samples through the pipeline and
writes the sheet as a PNG (``render.render_preview``, apart so the nodes never reach diffusers); Train Dual LoRA
samples with ComfyUI's sampler and shows the same sheet on the progress bar."""

from __future__ import annotations

import numpy as np

from ..data import masks

PREVIEW_STEPS, PREVIEW_CFG = 20, 2.5


def preview_sheet(glob: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """(H, W, 3) global and anomaly images in [0, 1] -> (H, 3W, 3) float sheet: global | anomaly | its mask (grey
    distance, as Extract Anomaly Mask's fallback: no U²-Net needed while training)."""
    mask = masks.extract_mask(anomaly, method="grey", min_area=4)
    return np.concatenate([glob, anomaly, np.repeat(mask[..., None].astype(np.float32), 3, axis=2)], axis=1)
