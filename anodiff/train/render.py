"""``anodiff train``'s preview PNG: one pair sampled with the diffusers pipeline, laid out by ``preview_sheet``."""

from __future__ import annotations

from pathlib import Path

from ..common.imageio import write_png
from .preview import PREVIEW_CFG, PREVIEW_STEPS, preview_sheet


def render_preview(
    sd,
    dual_unet,
    prompts: tuple[str, str],
    resolution: int,
    seed: int,
    path: Path,
    steps: int = PREVIEW_STEPS,
    cfg: float = PREVIEW_CFG,
) -> Path:
    """``dual_unet`` is the training ``DualUNet`` and ``sd`` the base whose text encoder carries the live text LoRA;
    sampling runs the pipeline (the project's one loop, ``anodiff.sd15.sampling.denoise``; DDIM here), in the UNet's
    dtype under mixed precision."""
    from ..sd15.pipeline import DualAnoDiffPipeline

    pipe = DualAnoDiffPipeline.live(sd, dual_unet, prompts)
    pair = pipe(1, resolution, resolution, steps=steps, cfg=cfg, scheduler="ddim", seed=seed, progress=False)
    write_png(Path(path), preview_sheet(pair.images[0], pair.anomaly_parts[0]))
    return Path(path)
