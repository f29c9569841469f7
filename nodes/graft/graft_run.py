"""The graft mode on a ComfyUI MODEL: a clone with attn1/attn2 replace patches on the 16 SD1.5 transformers, run
through ``anodiff.graft.core.graft_latent`` with the clone's raw UNet. The user's MODEL is never patched."""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.graft.attention import GraftMasks, GraftPass, graft_attention
from ...anodiff.graft.config import GraftSettings, find_tokens, prompts
from ...anodiff.graft.core import GraftCache, Prompts, graft_latent
from ...anodiff.graft.embedding import reference_key
from ...anodiff.graft.inputs import GraftInputs, tighten
from ...anodiff.model.sites import SD15_SITES
from ...anodiff.regions.composite import composite
from ..model.attach import check_sd15_layout
from ..model.patch import SharedAcrossClones
from ..train.train_patch import unfreeze_inference_weights

CACHE = GraftCache()
"""Optimised embeddings and reference inversions of this ComfyUI session, per reference (kept for 8 references)."""


class GraftState(SharedAcrossClones):
    """The pass of the UNet call in progress, read by every attention patch of the clone."""

    run: GraftPass | None = None


class GraftAttnPatch(SharedAcrossClones):
    def __init__(self, state: GraftState, is_self: bool) -> None:
        self.state, self.is_self = state, is_self

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        index = int(extra_options.get("transformer_index", 0))
        return graft_attention(q, k, v, extra_options["n_heads"], self.state.run, self.is_self, index).to(q.dtype)


def grafted_clone(model) -> tuple[object, GraftState]:
    """``model.clone()`` with the graft patches on all 32 attentions (the MODEL given stays as it was)."""
    check_sd15_layout(model)
    clone, state = model.clone(), GraftState()
    for site in SD15_SITES:
        kind, number = site.block
        patch = GraftAttnPatch(state, site.is_self)
        setter = clone.set_model_attn1_replace if site.is_self else clone.set_model_attn2_replace
        setter(patch, kind, number, 0)
    # the embedding fit backpropagates through weights a loader made in inference mode
    unfreeze_inference_weights(clone)
    return clone, state


def _ids(clip, text: str) -> list[int]:
    tokens = clip.tokenize(text)
    row = next(iter(tokens.values()))[0]
    return [int(t[0]) if isinstance(t, (tuple, list)) else int(t) for t in row]


def clip_prompts(clip, category: str, defect: str, negative: str) -> Prompts:
    """The five embeddings and the defect words' token positions (rule 3) from a ComfyUI CLIP."""
    texts = [*prompts(category, defect), negative, ""]
    e = [clip.encode_from_tokens(clip.tokenize(t)).float() for t in texts]
    word = _ids(clip, defect)
    end = word[-1]  # SD1's end token pads the row
    word = word[1 : word.index(end)] if end in word[1:] else word[1:]
    return Prompts(*e, find_tokens(_ids(clip, texts[2]), word))


def _prompts_on(clip, category: str, defect: str, negative: str, device: torch.device) -> Prompts:
    """``clip_prompts``' embeddings moved to ``device``."""
    with torch.no_grad():
        embeds = clip_prompts(clip, category, defect, negative)
    return Prompts(
        *(e.to(device) for e in (embeds.normal, embeds.reference, embeds.target, embeds.negative, embeds.empty)),
        embeds.defect_tokens,
    )


def _cached_key(inputs: GraftInputs, category: str, defect: str, clone, settings: GraftSettings, seed: int) -> str:
    """The reference's key in the trajectory cache, which is emptied before it would hold a ninth reference."""
    key = reference_key(
        inputs.reference,
        inputs.reference_mask,
        category=category,
        defect=defect,
        model=id(clone.model),
        steps=settings.steps,
        optimise=settings.optimise_steps,
        lr=settings.optimise_lr,
        cfg=settings.cfg,
        negative=settings.negative,
        seed=seed,
    )
    if len(CACHE.trajectories) >= 8 and key not in CACHE.trajectories:
        CACHE.trajectories.clear()
        CACHE.bank.memory.clear()
    return key


def graft_images(
    model,
    clip,
    vae,
    reference: np.ndarray,
    reference_mask: np.ndarray,
    normal: np.ndarray,
    target_mask: np.ndarray,
    category: str,
    defect: str,
    settings: GraftSettings,
    seed: int,
    threshold: float | None,
    feather: int,
    tick,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image (H, W, 3), mask (H, W)) at the normal image's size (rounded down to a multiple of 8)."""
    import comfy.model_management as mm

    h, w = (normal.shape[0] // 8) * 8, (normal.shape[1] // 8) * 8
    inputs = GraftInputs.checked(reference, reference_mask, normal, target_mask, size=(h, w))
    clone, state = grafted_clone(model)
    mm.load_models_gpu([clone])
    device, dtype = mm.get_torch_device(), clone.model.get_dtype()
    latent_format, unet = clone.model.latent_format, clone.model.diffusion_model
    options = clone.model_options["transformer_options"]

    @torch.no_grad()
    def encode(image: np.ndarray) -> torch.Tensor:
        return latent_format.process_in(vae.encode(torch.from_numpy(image)[None])).float().to(device)

    @torch.no_grad()
    def decode(latent: torch.Tensor) -> np.ndarray:
        return vae.decode(latent_format.process_out(latent.float())).float()[0].clamp(0, 1).cpu().numpy()

    def predict(x, t, context, run):
        state.run = run
        t = torch.as_tensor(t, device=device).reshape(-1).expand(x.shape[0]).float()
        out = unet(
            x.to(device, dtype), timesteps=t, context=context.to(device, dtype), transformer_options=dict(options)
        )
        return out.float()

    ref_latent, normal_latent = encode(inputs.reference), encode(inputs.normal)
    lh, lw = normal_latent.shape[-2:]
    masks = GraftMasks(
        *(torch.from_numpy(m.astype(np.float32)).to(device) for m in (inputs.reference_mask, inputs.target_mask)),
        latent_hw=(lh, lw),
    )
    embeds = _prompts_on(clip, category, defect, settings.negative, device)
    key = _cached_key(inputs, category, defect, clone, settings, seed)
    alphas = 1.0 / (1.0 + clone.model.model_sampling.sigmas.detach().double().cpu() ** 2)  # sigma^2 = (1 - a) / a
    try:
        latent, _ = graft_latent(
            predict,
            alphas,
            ref_latent,
            normal_latent,
            masks,
            embeds,
            settings,
            key,
            CACHE,
            seed,
            progress=False,
            tick=tick,
        )
    finally:
        state.run = None
    raw = decode(latent)
    image = composite(raw, inputs.normal, inputs.target_mask.astype(np.float32), feather)
    return image, tighten(raw, decode(normal_latent), inputs.target_mask, threshold)
