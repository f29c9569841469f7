"""Background compensation patches: the write pass on the noised background and the attn1 mixing of the read pass.

The background noise is drawn from the sampler's seed (an OUTER_SAMPLE wrapper puts it into the transformer
options of that sampling run), so two seeds give two different BCM noises and one seed always the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...anodiff.model.bcm import write_then_read
from ...anodiff.model.sites import SD15_BY_BLOCK, SELF
from .patch import BANK, KEY, MODE, DualPatch, SharedAcrossClones

SEED = "anodiff_seed"  # transformer_options entry: the seed of the sampling run (set by outer_sample_wrapper)


def fit_latent(latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W): scaled to cover H x W keeping its aspect ratio, then centre-cropped."""
    h, w = latent.shape[-2:]
    height, width = size
    if (h, w) == (height, width):
        return latent
    scale = max(height / h, width / w)
    scaled = (max(height, round(h * scale)), max(width, round(w * scale)))
    if scaled != (h, w):
        latent = F.interpolate(latent, size=scaled, mode="bilinear", align_corners=False)
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return latent[..., top : top + height, left : left + width]


def noise_seed(options: dict, t: torch.Tensor) -> int:
    """The sampler's seed plus the step's sigma, as one 64-bit generator seed."""
    return (int(options.get(SEED) or 0) + int(float(t.flatten()[0]) * 1e4)) % (1 << 64)


def outer_sample_wrapper(executor: Callable, *args, **kwargs):
    """Record the sampling run's seed. ``CFGGuider.outer_sample(noise, latent, sampler, sigmas, denoise_mask,
    callback, disable_pbar, seed, ...)``; its ``model_options`` is a per-run copy, so nothing outlives the run."""
    seed = args[7] if len(args) > 7 else kwargs.get("seed")
    executor.class_obj.model_options.setdefault("transformer_options", {})[SEED] = seed
    return executor(*args, **kwargs)


class BCMPatch(SharedAcrossClones):
    """Background compensation on a MODEL that carries a BCM-trained ``DualPatch``.

    background: (1 or N, 4, h, w) VAE latents of the object-blackened background, unscaled as in the authors'
    code; grey: the latent of a flat mid-grey image, used for the uncond chunk as the authors do.
    """

    def __init__(self, dual: DualPatch, background: torch.Tensor, grey: torch.Tensor, strength: float) -> None:
        self.dual, self.background, self.grey, self.strength = dual, background, grey, strength

    def _background_rows(self, cond_or_uncond: list[int], pairs_per_chunk: int, like: torch.Tensor) -> torch.Tensor:
        rows = []
        for chunk in cond_or_uncond:
            source = self.grey if chunk == 1 else self.background
            if source.shape[0] not in (1, pairs_per_chunk):
                raise ValueError(
                    f"Background Compensation: {source.shape[0]} background images for {pairs_per_chunk} pairs; "
                    "give one background, or one per latent"
                )
            rows.append(source.expand(pairs_per_chunk, -1, -1, -1) if source.shape[0] == 1 else source)
        bg = torch.cat(rows).to(device=like.device, dtype=like.dtype)
        return fit_latent(bg, tuple(like.shape[-2:]))

    def apply_model_wrapper(
        self,
        executor: Callable,
        x,
        t,
        c_concat=None,
        c_crossattn=None,
        control=None,
        transformer_options=None,
        **kwargs,
    ):
        options = dict(transformer_options or {})
        cond_or_uncond = list(options.get("cond_or_uncond") or [0])
        per_chunk = x.shape[0] // len(cond_or_uncond)
        bg = self._background_rows(cond_or_uncond, per_chunk // 2, x)
        sigma = t[0::2] if t.dim() else t
        g = torch.Generator(device="cpu").manual_seed(noise_seed(options, t))
        noisy = bg + sigma.reshape(-1, 1, 1, 1).to(bg) * torch.randn(bg.shape, generator=g).to(bg)

        def call(latents, timesteps, context, mode: str, bank: dict):
            if mode == "write":  # the background: no concat/control inputs of the pairs
                return executor(latents, timesteps, None, context, None, {**options, MODE: mode, BANK: bank})
            return executor(
                latents, timesteps, c_concat, context, control, {**options, MODE: mode, BANK: bank}, **kwargs
            )

        return write_then_read(call, x, t, c_crossattn, noisy, sigma)

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        mode, bank = extra_options.get(MODE), extra_options.get(BANK)
        if bank is None or mode not in ("write", "read"):
            return n, context, value
        site = SD15_BY_BLOCK[(tuple(extra_options["block"]), SELF)]
        if mode == "write":
            bank[site.ldm] = n
            return n, context, value
        bcm = self.dual.layer(site).bcm
        mixed = bcm.kv_source(context, bank[site.ldm].to(context), self.strength)
        return n, mixed, mixed


def apply_bcm(model, patch: BCMPatch):
    import comfy.patcher_extension

    if model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY + "_bcm"):
        raise ValueError(
            "Background Compensation: this MODEL already has Background Compensation; connect the "
            "MODEL from Load Dual LoRA (one background set per model; use a batch of backgrounds)"
        )
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY + "_bcm", patch.apply_model_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY + "_bcm", outer_sample_wrapper)
    m.set_model_attn1_patch(patch)
    return m
