"""The graft mode's whole computation on latents, framework-free: the diffusers sampler (``graft.sampler``) and the
ComfyUI node both call ``graft_latent`` with their own ``predict`` (the UNet) and progress callback.

Both images are DDIM-inverted; three branches ``[normal, reference, target]`` (doubled for guidance as
``[uncond x3; cond x3]``) share every UNet call through the project's one loop (``anodiff.sd15.sampling.denoise``).
The target starts from the normal image's x_T; after every step the normal and reference rows are reset to their
own trajectories and the target outside the target mask to the normal's (O2MAG's LocalBlend), so the background
comes back from the inversion. The reference's inversion and optimised embedding are cached per reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..sd15.sampling import denoise
from .attention import GraftMasks, GraftPass
from .config import GraftSettings
from .embedding import EmbeddingBank, optimise_embedding
from .inversion import ddim_invert, ddim_schedulers

GraftPredict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, GraftPass | None], torch.Tensor]
"""(latents, timestep, context, graft pass or None for plain attention) -> predicted noise, fp32."""


@dataclass
class Prompts:
    """(1, 77, C) embeddings: the normal and reference rows' cond prompts, the target's before optimisation, the
    negative (uncond of every row) and the empty prompt (inversion); plus the defect words' token positions."""

    normal: torch.Tensor
    reference: torch.Tensor
    target: torch.Tensor
    negative: torch.Tensor
    empty: torch.Tensor
    defect_tokens: tuple[int, ...] = ()


@dataclass
class GraftCache:
    """Per reference key: the optimised embedding (``bank``) and the reference's inversion trajectory."""

    bank: EmbeddingBank = field(default_factory=EmbeddingBank)
    trajectories: dict[str, list[torch.Tensor]] = field(default_factory=dict)


@torch.no_grad()
def sample_graft(
    predict: GraftPredict,
    scheduler: object,
    ref_traj: list[torch.Tensor],
    normal_traj: list[torch.Tensor],
    masks: GraftMasks,
    context: torch.Tensor,
    settings: GraftSettings,
    defect_tokens: tuple[int, ...] = (),
    progress: object | None = None,
) -> torch.Tensor:
    """The target's final latent (1, 4, h, w) from the two trajectories ([x_0 .. x_T] each, T = ``settings.steps``).

    context: (3 or 6, 77, C) rows ``[normal, reference, target]`` (``[uncond x3; cond x3]`` when ``cfg != 1``).
    progress: anything with ``update()``, advanced once per step.
    """
    steps, guided = settings.steps, settings.cfg != 1.0
    if len(ref_traj) != steps + 1 or len(normal_traj) != steps + 1:
        raise ValueError(f"trajectories must hold steps + 1 = {steps + 1} latents")
    blend = F.interpolate(masks.target[None, None].float(), size=normal_traj[0].shape[-2:], mode="nearest")
    cond = (False, True) if guided else (True,)
    state = {"step": 0}

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        run = GraftPass(state["step"], cond, masks, defect_tokens, settings)
        pred = predict(torch.cat([x, x]) if guided else x, t, context, run).float()
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
    return denoise(denoiser, scheduler, start, on_step_end=step_end, progress=progress)[2:3]


class _Ticks:
    """One ``update()`` for tqdm and for a caller's callback (ComfyUI's ProgressBar)."""

    def __init__(self, bar, tick: Callable[[], None] | None) -> None:
        self.bar, self.tick = bar, tick

    def update(self) -> None:
        self.bar.update()
        if self.tick is not None:
            self.tick()


def graft_latent(
    predict: GraftPredict,
    alphas: torch.Tensor,
    ref_latent: torch.Tensor,
    normal_latent: torch.Tensor,
    masks: GraftMasks,
    prompts: Prompts,
    settings: GraftSettings,
    key: str,
    cache: GraftCache,
    seed: int = 0,
    progress: bool = True,
    tick: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(the target's final latent, seconds spent in inversion / optimisation / sampling) for one image.

    key: identifies the reference (image, mask, prompts, settings) for ``cache``; ``tick`` is called after every
    inversion, optimisation and sampling step (ComfyUI's progress bar and interrupt check)."""
    s = settings
    forward, inverse = ddim_schedulers(alphas, s.steps)
    seconds, clock = {}, time.perf_counter()
    plain = lambda x, t, c: predict(x, t, c, None)
    if key not in cache.trajectories:
        cache.trajectories[key] = ddim_invert(
            plain, inverse, ref_latent, prompts.empty, progress, "inversion (reference)", tick
        )
    normal_traj = ddim_invert(plain, inverse, normal_latent, prompts.empty, progress, "inversion (normal)", tick)
    seconds["inversion"] = time.perf_counter() - clock
    clock, made = time.perf_counter(), cache.bank.made
    target = prompts.target
    if s.optimise_steps:
        target = cache.bank.get(
            key,
            lambda: optimise_embedding(
                plain,
                forward,
                ref_latent,
                prompts.target,
                prompts.negative,
                s.optimise_steps,
                s.optimise_lr,
                s.cfg,
                seed,
                progress,
                tick,
            ),
        ).to(prompts.target)
    seconds["optimisation"] = time.perf_counter() - clock if cache.bank.made > made else 0.0
    clock = time.perf_counter()
    cond = torch.cat([prompts.normal, prompts.reference, target])
    context = torch.cat([prompts.negative.expand(3, -1, -1), cond]) if s.cfg != 1.0 else cond
    with tqdm(total=s.steps, desc="graft sampling", leave=False, disable=not progress) as bar:
        latent = sample_graft(
            predict,
            forward,
            cache.trajectories[key],
            normal_traj,
            masks,
            context,
            s,
            prompts.defect_tokens,
            _Ticks(bar, tick),
        )
    seconds["sampling"] = time.perf_counter() - clock
    return latent, seconds
