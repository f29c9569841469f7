"""The graft mode in diffusers: one defect image from one reference defect, a normal image and a target mask
(the computation itself: ``graft.core``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..regions.composite import composite
from ..sd15.load import SD15, check_sd15
from .attention import GraftMasks, GraftPass
from .config import GraftSettings, find_tokens, prompts
from .core import GraftCache, Prompts, graft_latent
from .ddim import sd15_alphas
from .embedding import EmbeddingBank, reference_key
from .inputs import TIGHTEN_THRESHOLD, GraftInputs, tighten
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
    return find_tokens(ids, word)


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
        self.cache = GraftCache(bank if bank is not None else EmbeddingBank())
        self.progress = progress

    @property
    def bank(self) -> EmbeddingBank:
        return self.cache.bank

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

    def predict(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, run: GraftPass | None) -> torch.Tensor:
        unet = self.base.unet
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        kw = {"cross_attention_kwargs": {"graft": run}} if run is not None else {}
        return unet(x.to(unet.dtype), t, context.to(x.device, unet.dtype), return_dict=False, **kw)[0].float()

    def prompts(self, category: str, defect: str) -> Prompts:
        texts = [*prompts(category, defect), self.settings.negative, ""]
        with torch.no_grad():
            e = self.base.encode_prompts(texts).float()
        tokens = defect_token_positions(self.base.tokenizer, texts[2], defect)
        return Prompts(e[0:1], e[1:2], e[2:3], e[3:4], e[4:5], tokens)

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
        if h % f or w % f or inputs.reference.shape != inputs.normal.shape:
            raise ValueError(
                f"reference and normal image must share one size, a multiple of {f} (the VAE's "
                f"downsampling); got {inputs.reference.shape[:2]} and {inputs.normal.shape[:2]}"
            )
        key = reference_key(
            inputs.reference,
            inputs.reference_mask,
            category=category,
            defect=defect,
            base=self.base.source,
            steps=s.steps,
            optimise=s.optimise_steps,
            lr=s.optimise_lr,
            cfg=s.cfg,
            negative=s.negative,
            seed=seed,
        )
        clock = time.perf_counter()
        ref_latent, normal_latent = self.encode(inputs.reference), self.encode(inputs.normal)
        encoding = time.perf_counter() - clock
        masks = GraftMasks(
            *(
                torch.from_numpy(m.astype(np.float32)).to(self.device)
                for m in (inputs.reference_mask, inputs.target_mask)
            ),
            latent_hw=(h // f, w // f),
        )
        alphas = sd15_alphas(self.base.scheduler.config)
        with grafted(self.base.unet):
            latent, seconds = graft_latent(
                self.predict,
                alphas,
                ref_latent,
                normal_latent,
                masks,
                self.prompts(category, defect),
                s,
                key,
                self.cache,
                seed,
                self.progress,
            )
        clock = time.perf_counter()
        raw = self.decode(latent)
        seconds["vae"] = encoding + time.perf_counter() - clock
        image = composite(raw, inputs.normal, inputs.target_mask.astype(np.float32), feather)
        mask = tighten(raw, self.decode(normal_latent), inputs.target_mask, threshold)
        return GraftResult(image, mask, inputs.target_mask, seconds)
