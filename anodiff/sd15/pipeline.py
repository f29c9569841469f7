"""Inference with diffusers: paired images (whole anomaly image, anomaly part on grey) from a DualAnoDiff model.

Every denoising step runs the UNet once on the classifier-free-guidance batch
``[uncond g0 a0 g1 a1 ...; cond g0 a0 g1 a1 ...]`` (dualanodiff-reference.md §7), plus one BCM write pass on
the backgrounds when they are given (§5.4). Each pair draws its noise from its own generator seeded
``seed + i``, so a pair comes out the same whether it was generated in a batch or alone, and an interrupted
run that restarts at pair ``i`` reproduces it. Official: ``inference_mvtec_split.py``, ``inference_test_tempt.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.imageio import as_float_image
from ..model.pairs import interleave
from ..regions.composite import composite
from ..regions.inputs import region_inputs, region_mask  # noqa: F401 (region_mask: public here before)
from ..weights.schema import DualFile
from ..weights.text import add_text_lora, load_text_lora
from .load import SD15
from .processor import DualAttnProcessor, DualPass, DualUNet

log = logging.getLogger(__name__)

SCHEDULERS = ("pndm", "ddim", "euler", "dpm++")


def make_scheduler(name: str, config: dict) -> object:
    """A fresh sampling scheduler from the base model's training-scheduler config (SD1.5's settings kept)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    if name == "pndm":  # the authors' sampler: SD1.5's default PNDM
        return PNDMScheduler.from_config(config, skip_prk_steps=True, set_alpha_to_one=False)
    if name == "ddim":
        return DDIMScheduler.from_config(config, set_alpha_to_one=False)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")


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


def _has_peft_layers(module: torch.nn.Module) -> bool:
    return any(hasattr(m, "lora_A") for m in module.modules())


def _seeds(seed: int | Sequence[int], num_pairs: int) -> list[int]:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(num_pairs)]
    seeds = [int(s) for s in seed]
    if len(seeds) != num_pairs:
        raise ValueError(f"seed: give one int, or one seed per pair ({num_pairs}), got {len(seeds)} seeds")
    return seeds


class DualAnoDiffPipeline:
    """SD1.5 plus one DualAnoDiff weight file, ready to sample pairs.

    The pipeline takes over ``base``: its UNet gets the dual attention processors and its text encoder the
    file's LoRA, in place (copying SD1.5 would double its memory). Load the base again for another weight file.
    """

    def __init__(self, base: SD15, dual: DualFile, device: str | torch.device | None = None) -> None:
        if any(isinstance(p, DualAttnProcessor) for p in base.unet.attn_processors.values()):
            raise ValueError(
                f"base model {base.source} already serves a DualAnoDiff pipeline; load it again (load_sd15) for another"
            )
        dual.check_unet(*base.widths)
        if dual.has_text_lora:
            if _has_peft_layers(base.text_encoder):
                raise ValueError(f"base model {base.source}: the text encoder already carries a LoRA; load it again")
            add_text_lora(base.text_encoder, dual.config.text_rank, dual.config.text_lora_alpha)
            load_text_lora(base.text_encoder, dual.text_tensors())
            base.text_encoder.requires_grad_(False).eval()
        self.base, self.prompts, self.bcm, self.source = base, dual.prompts, dual.config.bcm, dual.source
        dtype = base.unet.dtype
        self.model = DualUNet(base.unet, dual.adapter(dtype=dtype)).eval().requires_grad_(False)
        base.vae.to(dtype=torch.float32)  # SD1.5's VAE overflows in fp16; decoding is a small part of the time
        if device is not None:
            for module in (self.model, base.vae, base.text_encoder):
                module.to(device)
        self._grey: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def live(cls, base: SD15, model: DualUNet, prompts: tuple[str, str], bcm: bool = False) -> DualAnoDiffPipeline:
        """A pipeline over a model that is still training (the trainer's previews): no weight file, the base's
        text encoder already carries the live text LoRA, and the adapter may stay in fp32 beside a half UNet
        (the UNet then runs under autocast)."""
        self = cls.__new__(cls)
        self.base, self.model, self.prompts, self.bcm, self.source = base, model, tuple(prompts), bcm, "the live model"
        self._grey = {}
        return self

    @property
    def device(self) -> torch.device:
        return self.base.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.unet.dtype

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.base.vae.config.block_out_channels) - 1)

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 4, h, w) posterior mean, NOT multiplied by ``latent_scale``.

        Official BCM never scales the background latent (§5.2). The authors sample the posterior; its spread
        is negligible for SD's VAE, and the mean keeps a pair independent of the batch it was drawn in.
        """
        vae = self.base.vae
        return vae.encode(images.to(self.device, vae.dtype)).latent_dist.mean.to(self.dtype)

    def _grey_latent(self, height: int, width: int) -> torch.Tensor:
        """The CFG "unconditional" background: a flat mid-grey image (0 in [-1, 1]), encoded once per size."""
        key = (height, width)
        if key not in self._grey:
            self._grey[key] = self._encode_image(torch.zeros(1, 3, height, width))
        return self._grey[key]

    def _background_latents(
        self, backgrounds: Sequence[np.ndarray], num_pairs: int, height: int, width: int
    ) -> torch.Tensor:
        if not self.bcm:
            raise ValueError(
                f"backgrounds given, but {self.source} was trained without BCM; drop the backgrounds "
                "or use a BCM weight file"
            )
        if len(backgrounds) not in (1, num_pairs):
            raise ValueError(
                f"backgrounds: give one image per pair ({num_pairs}) or one for all, got {len(backgrounds)}"
            )
        tensors = []
        for k, image in enumerate(backgrounds):
            x = as_float_image(np.asarray(image), f"backgrounds[{k}]")
            if x.shape[:2] != (height, width):
                shrink = x.shape[0] * x.shape[1] > height * width
                x = cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            tensors.append(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1) * 2.0 - 1.0)
        latents = torch.cat([self._encode_image(t[None]) for t in tensors])
        return latents.expand(num_pairs, *latents.shape[1:]) if len(backgrounds) == 1 else latents

    def _check_call(self, num_pairs: int, height: int, width: int, steps: int, cfg: float, scheduler: str) -> None:
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
        """
        self._check_call(num_pairs, height, width, steps, cfg, scheduler)
        seeds = _seeds(seed, num_pairs)
        guided = cfg != 1.0
        chunks = 2 if guided else 1
        device, dtype = self.device, self.dtype
        f = self.vae_factor
        shape = (2, self.base.unet.config.in_channels, height // f, width // f)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

        prompts = [
            self.prompts[0] if prompt_global is None else prompt_global,
            self.prompts[1] if prompt_anomaly is None else prompt_anomaly,
            negative,
        ]
        embeds = self.base.encode_prompts(prompts).to(dtype)
        g, a, neg = (e[None].expand(num_pairs, *e.shape) for e in embeds)
        context = interleave(g, a)
        if guided:
            context = torch.cat([neg.repeat_interleave(2, dim=0), context])

        background = grey = None
        if backgrounds is not None:
            background = self._background_latents(backgrounds, num_pairs, height, width)
            grey = self._grey_latent(height, width).expand_as(background)
        elif self.bcm:
            log.info(
                "%s has BCM but no backgrounds were given: sampling without background compensation", self.source
            )

        sampler = make_scheduler(scheduler, self.base.scheduler.config)
        sampler.set_timesteps(steps, device=device)
        noise = torch.cat([torch.randn(shape, generator=gen) for gen in generators]).to(device)
        latents = noise * sampler.init_noise_sigma  # fp32 whatever the UNet's dtype: only the UNet runs in half
        run = DualPass(chunks=chunks)
        held = regions = None
        if source is not None or region is not None:
            photos, regions = region_inputs(source, region, num_pairs, height, width)
            held = self._region_targets(photos, regions)
        timesteps = list(sampler.timesteps)
        for i, t in enumerate(tqdm(timesteps, desc="denoising", disable=not progress, leave=False)):
            x = sampler.scale_model_input(latents, t)
            x = torch.cat([x, x]) if guided else x
            extra = {}
            if background is not None:
                extra = self._noised_backgrounds(background, grey, t, generators, guided)
            with self.autocast():
                pred = self.model(x, t, context, run=run, **extra).float()
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + cfg * (cond - uncond)
            latents = sampler.step(pred, t, latents).prev_sample
            if held is not None:
                target, keep = held
                if i + 1 < len(timesteps):
                    target = sampler.add_noise(target, noise, timesteps[i + 1].reshape(1))
                latents = keep * latents + (1 - keep) * target
        pairs = self._decode(latents, seeds)
        if held is not None and feather is not None:
            pairs.images[:] = np.stack([composite(img, photos[k % len(photos)], mask, feather)
                                        for k, (img, mask) in enumerate(zip(pairs.images, regions))])  # fmt: skip
        return pairs

    def autocast(self) -> torch.autocast:
        """The UNet in its own dtype: with a half UNet, autocast runs every matmul in that dtype, whatever the
        dtype of the latents (fp32) and of the adapter (fp32 while training); with an fp32 UNet it is off."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _region_targets(self, photos: list[np.ndarray], regions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows the latents are held to outside the regions, (2N, 1, h, w) per-row map: 1 where sampling is free).

        Both rows of pair i share region i (and photo i when one per pair is given), so a batch may hold a
        different region in every pair; photos are encoded one at a time, so a pair is batch-independent."""
        scale = self.base.latent_scale
        height, width = photos[0].shape[:2]
        encoded = [self._encode_image(torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None] * 2.0 - 1.0)
                   for p in photos]  # fmt: skip
        photo_latent = torch.cat(encoded).float() * scale
        grey = self._grey_latent(height, width).float() * scale
        num_pairs = regions.shape[0]
        rows = interleave(photo_latent.expand(num_pairs, -1, -1, -1) if len(photos) == 1 else photo_latent,
                          grey.expand(num_pairs, -1, -1, -1))  # fmt: skip
        m = torch.from_numpy(regions.astype(np.float32))[:, None]
        keep = torch.nn.functional.adaptive_max_pool2d(m, rows.shape[-2:])  # a latent cell touching the region is free
        return rows.to(self.device), keep.repeat_interleave(2, dim=0).to(self.device)

    def _noised_backgrounds(
        self, background: torch.Tensor, grey: torch.Tensor, t: torch.Tensor, generators: list, guided: bool
    ) -> dict[str, torch.Tensor]:
        """BCM write-pass inputs: backgrounds DDPM-noised to step ``t`` with fresh noise from each pair's generator.

        Rows follow the pairs of the UNet batch: the grey (uncond) backgrounds, then the real ones (§5.4).
        """
        train = self.base.scheduler
        t_train = torch.as_tensor(t).float().round().long().clamp(0, train.config.num_train_timesteps - 1)
        fresh = torch.stack([torch.randn(2, *background.shape[1:], generator=gen) for gen in generators])
        fresh = fresh.to(background.device, background.dtype)
        rows = [grey, background] if guided else [background]
        noise = [fresh[:, 0], fresh[:, 1]] if guided else [fresh[:, 1]]
        clean = torch.cat(rows)
        steps = t_train.to(clean.device).expand(clean.shape[0])
        noised = train.add_noise(clean, torch.cat(noise), steps)
        return {"background": noised, "background_timestep": steps}

    def _decode(self, latents: torch.Tensor, seeds: list[int]) -> PairBatch:
        """Decode one pair at a time (bounded memory, batch-independent); clamp to [0, 1]."""
        vae = self.base.vae
        out = []
        for pair in latents.split(2):
            image = vae.decode((pair / self.base.latent_scale).to(vae.dtype)).sample
            out.append(((image.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu())
        rows = torch.cat(out).numpy()
        return PairBatch(images=rows[0::2].copy(), anomaly_parts=rows[1::2].copy(), seeds=seeds)
