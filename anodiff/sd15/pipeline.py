"""Inference with diffusers: paired images (whole anomaly image, anomaly part on grey) from a DualAnoDiff model.

``DualAnoDiffPipeline`` is a ``diffusers.DiffusionPipeline`` over SD1.5's five components plus the dual model.
Every denoising step runs the UNet once on the classifier-free-guidance batch
``[uncond g0 a0 g1 a1 ...; cond g0 a0 g1 a1 ...]`` (dualanodiff-reference.md §7), plus one BCM write pass on
the backgrounds when they are given (§5.4), through the project's one loop (``anodiff.sd15.sampling.denoise``).
Each pair draws its noise from its own generator seeded ``seed + i``, so a pair comes out the same whether it was
generated in a batch or alone, and an interrupted run that restarts at pair ``i`` reproduces it.
Official: ``inference_mvtec_split.py``, ``inference_test_tempt.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline

from ..model.pairs import interleave
from ..regions.composite import composite
from ..regions.inputs import region_inputs, region_mask  # noqa: F401 (region_mask: public here before)
from ..weights.schema import DualFile
from . import conditioning
from .pipeline_loading import DualLoading
from .processor import UNetPass
from .sampling import denoise
from .schedulers import SCHEDULERS, make_scheduler

log = logging.getLogger(__name__)

__all__ = ["SCHEDULERS", "DualAnoDiffPipeline", "DualFile", "PairBatch", "make_scheduler"]
HALF = (torch.float16, torch.bfloat16)


@dataclass
class PairBatch:
    """images: (N, H, W, 3) whole anomaly images; anomaly_parts: (N, H, W, 3) the defect on mid-grey.

    Both float32 in [0, 1]; ``seeds[i]`` is the seed pair ``i`` was drawn from.
    """

    images: np.ndarray
    anomaly_parts: np.ndarray
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.seeds)


def _seeds(seed: int | Sequence[int], num_pairs: int) -> list[int]:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(num_pairs)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_pairs:
        raise ValueError(f"seed: give one int, or one seed per pair ({num_pairs}), got {len(seeds)} seeds")
    return seeds


def _pasted(images: np.ndarray, photos: list[np.ndarray], regions: np.ndarray, feather: int) -> np.ndarray:
    """Each decoded global image pasted into its photo inside its region with a ``feather``-pixel edge."""
    return np.stack(
        [composite(img, photos[k % len(photos)], mask, feather) for k, (img, mask) in enumerate(zip(images, regions))]
    )


class DualAnoDiffPipeline(DualLoading, DiffusionPipeline):
    """SD1.5 plus one DualAnoDiff weight file, ready to sample pairs.

    Build it with ``from_pretrained`` (a diffusers folder), ``from_single_file`` (a checkpoint) or ``from_sd15`` (an
    ``SD15`` already loaded), each with ``dual=`` a weight file; or from the five components, then ``load_dual``.
    The pipeline takes over the base: its UNet gets the dual attention processors and its text encoder the file's
    LoRA, in place (copying SD1.5 would double its memory). Load the base again for another weight file.
    The VAE always runs in fp32 (SD1.5's VAE overflows in fp16; decoding is a small part of the time).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ("latents",)

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        vae.to(dtype=torch.float32)
        self.model, self.prompts, self.bcm, self.source = None, ("", ""), False, "no DualAnoDiff weights"
        self._grey: dict[tuple, torch.Tensor] = {}
        self.set_progress_bar_config(desc="denoising", leave=False)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 4, h, w) posterior mean, NOT multiplied by ``latent_scale``.

        Official BCM never scales the background latent (§5.2). The authors sample the posterior; its spread
        is negligible for SD's VAE, and the mean keeps a pair independent of the batch it was drawn in.
        """
        images = images.to(self._execution_device, self.vae.dtype)
        return self.vae.encode(images).latent_dist.mean.to(self.dtype)

    def _grey_latent(self, height: int, width: int) -> torch.Tensor:
        """The CFG "unconditional" background: a flat mid-grey image (0 in [-1, 1]), encoded once per size."""
        key = (height, width, self._execution_device, self.dtype)
        if key not in self._grey:
            self._grey[key] = self._encode_image(torch.zeros(1, 3, height, width))
        return self._grey[key]

    def _check_call(
        self,
        num_pairs: int,
        height: int,
        width: int,
        steps: int,
        cfg: float,
        scheduler: str,
        tensor_inputs: Sequence[str],
    ) -> None:
        if self.model is None:
            raise ValueError("no DualAnoDiff weights in this pipeline: call pipe.load_dual(path) first")
        for name, value in (("num_pairs", num_pairs), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        f = self.vae_factor
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < f or value % f:
                raise ValueError(f"{name} must be a positive multiple of {f} (the VAE's downsampling), got {value!r}")
        if not cfg >= 1.0:
            raise ValueError(f"cfg must be >= 1 (1 turns guidance off), got {cfg!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {unknown[0]!r} is not one of {self._callback_tensor_inputs}"
            )

    @torch.inference_mode()
    def __call__(
        self,
        num_pairs: int,
        height: int = 512,
        width: int = 512,
        steps: int = 50,
        cfg: float = 2.5,
        scheduler: str = "pndm",
        seed: int | Sequence[int] = 0,
        prompt_global: str | None = None,
        prompt_anomaly: str | None = None,
        negative: str = "",
        backgrounds: Sequence[np.ndarray] | None = None,
        progress: bool = True,
        source: np.ndarray | None = None,
        region: np.ndarray | None = None,
        feather: int = 4,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> PairBatch:
        """Sample ``num_pairs`` pairs of ``height`` x ``width``.

        seed: pair ``i`` uses ``seed + i``, or ``seed[i]`` when a list is given. backgrounds (BCM files only):
        (H, W, 3) images in [0, 1] with the object already blacked out, one per pair or one for all; resized
        to the output size. Prompts default to the ones the file was trained with.
        source + region (region control): an (H, W, 3) photo in [0, 1] and an (H, W) mask; at every step the
        latents outside the region are replaced by the photo (global rows) and the grey canvas (anomaly rows)
        noised to that step, and the decoded global image is pasted into the photo with a ``feather``-pixel edge,
        so outside the grown region it is the photo exactly. source may be one photo per pair (crops of
        several photos in one batch); ``feather=None`` skips the paste (crop-and-stitch pastes at full size).
        progress: show the denoising bar (``set_progress_bar_config`` styles or disables it).
        callback_on_step_end (diffusers' semantics): ``callback(pipe, step, timestep, callback_kwargs) -> dict``
        after every step (after the region hold); ``callback_kwargs`` holds the tensors named in
        ``callback_on_step_end_tensor_inputs`` (``"latents"``: (2N, 4, h, w), rows [g0, a0, g1, a1, ...]), and a
        ``"latents"`` entry in the returned dict replaces the latents.
        """
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self._check_call(num_pairs, height, width, steps, cfg, scheduler, callback_on_step_end_tensor_inputs)
        seeds = _seeds(seed, num_pairs)
        guided = cfg != 1.0
        device, dtype = self._execution_device, self.dtype
        shape = (2, self.unet.config.in_channels, height // self.vae_factor, width // self.vae_factor)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        context = self._context(num_pairs, prompt_global, prompt_anomaly, negative, guided)
        background, grey = self._backgrounds(backgrounds, num_pairs, height, width)

        sampler = make_scheduler(scheduler, self.scheduler.config)
        sampler.set_timesteps(steps, device=device)
        noise = torch.cat([torch.randn(shape, generator=gen) for gen in generators]).to(device)
        latents = noise * sampler.init_noise_sigma  # fp32 whatever the UNet's dtype: only the UNet runs in half
        run = UNetPass(chunks=2 if guided else 1)
        held, photos, regions = self._region_hold(source, region, num_pairs, height, width)
        timesteps = list(sampler.timesteps)

        def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = torch.cat([x, x]) if guided else x
            x = x if dtype in HALF else x.to(dtype)  # a half UNet runs under autocast, an fp64 one takes fp64
            extra = {}
            if background is not None:
                extra = conditioning.noised_backgrounds(self.scheduler, background, grey, t, generators, guided)
            with self.autocast():
                pred = self.model(x, t, context, unet_pass=run, **extra).float()
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + cfg * (cond - uncond)
            return pred

        step_end = conditioning.step_end_hook(
            self, held, sampler, noise, timesteps, callback_on_step_end, callback_on_step_end_tensor_inputs
        )
        with self.progress_bar(total=len(timesteps)) if progress else nullcontext() as bar:
            latents = denoise(denoiser, sampler, latents, on_step_end=step_end, progress=bar)
        pairs = self._decode(latents, seeds)
        if held is not None and feather is not None:
            pairs.images[:] = _pasted(pairs.images, photos, regions, feather)
        self.maybe_free_model_hooks()
        return pairs

    def _context(
        self, num_pairs: int, prompt_global: str | None, prompt_anomaly: str | None, negative: str, guided: bool
    ) -> torch.Tensor:
        """The rows' text embeddings ``[g0, a0, g1, a1, ...]`` (the negative ones before them when guided); the
        prompts default to the ones the file was trained with."""
        prompts = [
            self.prompts[0] if prompt_global is None else prompt_global,
            self.prompts[1] if prompt_anomaly is None else prompt_anomaly,
            negative,
        ]
        embeds = self.base.encode_prompts(prompts).to(self._execution_device, self.dtype)
        g, a, neg = (e[None].expand(num_pairs, *e.shape) for e in embeds)
        context = interleave(g, a)
        return torch.cat([neg.repeat_interleave(2, dim=0), context]) if guided else context

    def _region_hold(
        self, source: np.ndarray | None, region: np.ndarray | None, num_pairs: int, height: int, width: int
    ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, list[np.ndarray] | None, np.ndarray | None]:
        """Region control's (held rows, free map), photos and regions at the output size; all None without it."""
        if source is None and region is None:
            return None, None, None
        photos, regions = region_inputs(source, region, num_pairs, height, width)
        grey = self._grey_latent(height, width)
        device = self._execution_device
        held = conditioning.region_targets(self._encode_image, grey, self.base.latent_scale, photos, regions, device)
        return held, photos, regions

    def _backgrounds(
        self, backgrounds: Sequence[np.ndarray] | None, num_pairs: int, height: int, width: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """BCM's background latents and the grey canvas' beside them, or ``(None, None)`` without backgrounds."""
        if backgrounds is None:
            if self.bcm:
                log.info(
                    "%s has BCM but no backgrounds were given: sampling without background compensation", self.source
                )
            return None, None
        if not self.bcm:
            raise ValueError(
                f"backgrounds given, but {self.source} was trained without BCM; drop the backgrounds "
                "or use a BCM weight file"
            )
        background = conditioning.background_latents(self._encode_image, backgrounds, num_pairs, height, width)
        return background, self._grey_latent(height, width).expand_as(background)

    def autocast(self) -> torch.autocast:
        """The UNet in its own dtype: with a half UNet, autocast runs every matmul in that dtype, whatever the
        dtype of the latents (fp32) and of the adapter (fp32 while training); otherwise it is off."""
        return torch.autocast(self._execution_device.type, dtype=self.dtype, enabled=self.dtype in HALF)

    def _decode(self, latents: torch.Tensor, seeds: list[int]) -> PairBatch:
        """Decode one pair at a time (bounded memory, batch-independent); clamp to [0, 1]."""
        out = []
        for pair in latents.split(2):
            image = self.vae.decode((pair / self.base.latent_scale).to(self.vae.dtype)).sample
            out.append(((image.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu())
        rows = torch.cat(out).numpy()
        return PairBatch(images=rows[0::2].copy(), anomaly_parts=rows[1::2].copy(), seeds=seeds)
