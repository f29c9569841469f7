"""The graft sampler: one defect image from one reference defect, a normal image and a target mask.

Both images are DDIM-inverted; three branches ``[normal, reference, target]`` (doubled for guidance as
``[uncond x3; cond x3]``) share every UNet call through the project's one loop (``anodiff.sd15.sampling.denoise``).
The target starts from the normal image's x_T; after every step the normal and reference rows are reset to their
own trajectories and the target outside the target mask to the normal's (O2MAG's LocalBlend), so the background
comes back from the inversion. The reference's inversion and optimised embedding are cached per reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..regions.composite import composite
from ..sd15.load import SD15, check_sd15
from ..sd15.sampling import denoise
from .attention import GraftMasks, GraftPass
from .config import GraftSettings, prompts
from .embedding import EmbeddingBank, optimise_embedding, reference_key
from .inputs import TIGHTEN_THRESHOLD, GraftInputs, tighten
from .inversion import ddim_invert, ddim_schedulers
from .processor import grafted


@dataclass
class GraftResult:
    """image: the defect image (H, W, 3) in [0, 1], the normal image outside the (feathered) target mask; mask:
    ``tighten``'s rule; target_mask: the region asked for; seconds: inversion / optimisation / sampling."""

    image: np.ndarray
    mask: np.ndarray
    target_mask: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def defect_token_positions(tokenizer, prompt: str, defect: str) -> tuple[int, ...]:
    """Positions of the defect words' tokens in the tokenized ``prompt`` (start token included), for rule 3."""
    ids = tokenizer(prompt).input_ids
    word = tokenizer(defect, add_special_tokens=False).input_ids
    for start in range(len(ids) - len(word), -1, -1):
        if word and ids[start : start + len(word)] == word:
            return tuple(range(start, start + len(word)))
    return ()


class GraftSampler:
    """SD1.5 (frozen, any dtype) behind the graft mode. ``bank``: where optimised embeddings are cached."""

    def __init__(
        self,
        base: SD15,
        settings: GraftSettings | None = None,
        bank: EmbeddingBank | None = None,
        progress: bool = True,
    ) -> None:
        check_sd15(base.unet, base.text_encoder, base.source)
        self.base, self.settings = base, settings or GraftSettings()
        self.bank = bank if bank is not None else EmbeddingBank()
        self.progress = progress
        self._trajectories: dict[str, list[torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self.base.unet.device

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.base.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) in [0, 1] -> (1, 4, h, w) scaled latent (posterior mean, fp32)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() * 2 - 1
        vae = self.base.vae
        return vae.encode(x.to(self.device, vae.dtype)).latent_dist.mean.float() * self.base.latent_scale

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> np.ndarray:
        vae = self.base.vae
        x = vae.decode((latent / self.base.latent_scale).to(vae.dtype)).sample.float()
        return ((x[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()

    def _context(
        self, category: str, defect: str, inputs: GraftInputs, key: str, latent: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """[uncond x3; cond x3] (or cond x3 without guidance), the target's cond the optimised embedding."""
        s = self.settings
        normal, reference, target = prompts(category, defect)
        with torch.no_grad():
            emb = self.base.encode_prompts([normal, reference, target, s.negative]).float()
        if s.optimise_steps:
            scheduler, _ = ddim_schedulers(self.base.scheduler.config, s.steps, self.device)
            fit = self.bank.get(
                key,
                lambda: optimise_embedding(
                    self.base.unet,
                    scheduler,
                    latent,
                    emb[2:3],
                    emb[3:4],
                    s.optimise_steps,
                    s.optimise_lr,
                    s.cfg,
                    seed,
                    self.progress,
                ),
            )
            emb[2] = fit[0].to(emb)
        cond = emb[:3]
        return torch.cat([emb[3:4].expand(3, -1, -1), cond]) if s.cfg != 1.0 else cond

    def __call__(
        self,
        inputs: GraftInputs,
        category: str = "object",
        defect: str = "defect",
        seed: int = 0,
        threshold: float | None = TIGHTEN_THRESHOLD,
        feather: int = 4,
    ) -> GraftResult:
        """One defect image (``GraftResult``); ``seed`` only seeds the embedding optimisation (all else is
        deterministic). threshold: ``tighten``'s; feather: pixels of the paste into the normal image."""
        s, f = self.settings, self.vae_factor
        h, w = inputs.normal.shape[:2]
        if h % f or w % f:
            raise ValueError(f"the working size {w}x{h} must be a multiple of {f} (the VAE's downsampling)")
        seconds = {}
        clock = time.perf_counter()
        key = reference_key(
            inputs.reference,
            inputs.reference_mask,
            category=category,
            defect=defect,
            base=self.base.source,
            steps=s.optimise_steps,
            lr=s.optimise_lr,
            cfg=s.cfg,
            negative=s.negative,
            seed=seed,
        )
        ref_latent, normal_latent = self.encode(inputs.reference), self.encode(inputs.normal)
        forward, inverse = ddim_schedulers(self.base.scheduler.config, s.steps, self.device)
        with torch.no_grad():
            empty = self.base.encode_prompts([""]).float()
        trajectory_key = f"{key}-{s.steps}"
        if trajectory_key not in self._trajectories:  # a few MB per reference; references rotate
            self._trajectories[trajectory_key] = ddim_invert(
                self.base.unet, inverse, ref_latent, empty, self.progress, "inversion (reference)"
            )
        ref_traj = self._trajectories[trajectory_key]
        normal_traj = ddim_invert(self.base.unet, inverse, normal_latent, empty, self.progress, "inversion (normal)")
        seconds["inversion"] = time.perf_counter() - clock
        clock = time.perf_counter()
        made = self.bank.made
        context = self._context(category, defect, inputs, key, ref_latent, seed)
        seconds["optimisation"] = time.perf_counter() - clock if self.bank.made > made else 0.0
        clock = time.perf_counter()
        masks = GraftMasks(
            *(
                torch.from_numpy(m.astype(np.float32)).to(self.device)
                for m in (inputs.reference_mask, inputs.target_mask)
            ),
            latent_hw=(h // f, w // f),
        )
        tokens = defect_token_positions(self.base.tokenizer, prompts(category, defect)[2], defect)
        latent = sample_graft(self.base.unet, forward, ref_traj, normal_traj, masks, context, s, tokens, self.progress)
        raw = self.decode(latent)
        seconds["sampling"] = time.perf_counter() - clock
        image = composite(raw, inputs.normal, inputs.target_mask.astype(np.float32), feather)
        mask = tighten(raw, self.decode(normal_latent), inputs.target_mask, threshold)
        return GraftResult(image, mask, inputs.target_mask, seconds)


@torch.no_grad()
def sample_graft(
    unet: torch.nn.Module,
    scheduler: object,
    ref_traj: list[torch.Tensor],
    normal_traj: list[torch.Tensor],
    masks: GraftMasks,
    context: torch.Tensor,
    settings: GraftSettings,
    defect_tokens: tuple[int, ...] = (),
    progress: bool = True,
) -> torch.Tensor:
    """The target's final latent (1, 4, h, w) from the two trajectories ([x_0 .. x_T] each, T = ``settings.steps``).

    context: (3 or 6, 77, C) rows ``[normal, reference, target]`` (``[uncond x3; cond x3]`` when ``cfg != 1``).
    """
    steps, guided = settings.steps, settings.cfg != 1.0
    if len(ref_traj) != steps + 1 or len(normal_traj) != steps + 1:
        raise ValueError(f"trajectories must hold steps + 1 = {steps + 1} latents")
    blend = F.interpolate(masks.target[None, None].float(), size=normal_traj[0].shape[-2:], mode="nearest")
    cond = (False, True) if guided else (True,)
    context = context.to(unet.device, unet.dtype)
    state = {"step": 0}

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        run = GraftPass(state["step"], cond, masks, defect_tokens, settings)
        x = torch.cat([x, x]) if guided else x
        pred = unet(x.to(unet.dtype), t, context, cross_attention_kwargs={"graft": run}, return_dict=False)[0]
        pred = pred.float()
        if guided:
            uncond, cond_pred = pred.chunk(2)
            pred = uncond + settings.cfg * (cond_pred - uncond)
        return pred

    def step_end(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        state["step"] = i + 1
        j = steps - i - 1
        target = blend * latents[2:3] + (1 - blend) * normal_traj[j]
        return torch.cat([normal_traj[j], ref_traj[j], target])

    start = torch.cat([normal_traj[steps], ref_traj[steps], normal_traj[steps]])
    with grafted(unet), tqdm(total=steps, desc="graft sampling", leave=False, disable=not progress) as bar:
        latents = denoise(denoiser, scheduler, start, on_step_end=step_end, progress=bar)
    return latents[2:3]
