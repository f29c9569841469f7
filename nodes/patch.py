"""The only module that touches ComfyUI internals: installs a ``DualAdapter`` on a cloned MODEL.

Per-branch LoRA: a ``DIFFUSION_MODEL`` wrapper resolves the 128 q/k/v/out Linears from the UNet that is
actually running, overrides their ``forward`` (class forward + branch delta, so ComfyUI's weight casting and
streaming still run) and restores them in ``finally``. SAIM: attn1/attn2 output patches. BCM: an
``APPLY_MODEL`` wrapper runs the write pass on the noised background, an attn1 patch mixes it into the
global rows. Nothing here keeps a reference to a ComfyUI module, and nothing is patched globally.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from ..anodiff.dual import PROJECTIONS, DualAdapter, DualAttention
from ..anodiff.pairs import branch_ids
from ..anodiff.sites import CROSS, SD15_BY_BLOCK, SD15_SITES, SELF, AttnSite

log = logging.getLogger(__name__)

KEY = "dualanodiff"
MODE = "anodiff_mode"  # transformer_options entry: "dual" (default), "write" or "read"
BANK = "anodiff_bank"  # transformer_options entry: {site.ldm: background tokens} during a BCM read pass


class Shared:
    """Patch objects are shared, not copied: ``clone()`` deep-copies model_options, and ours hold tensors."""

    def __deepcopy__(self, memo: dict) -> Shared:
        return self

    def to(self, device: torch.device) -> Shared:  # ModelPatcher.model_patches_to; we move lazily instead
        return self


class DualPatch(Shared):
    """A loaded dual model plus its strengths; hands out copies cast to each device/dtype it meets."""

    def __init__(self, adapter: DualAdapter, strengths: tuple[float, float], saim: bool = True, name: str = "") -> None:
        self.adapter, self.strengths, self.saim, self.name = adapter.requires_grad_(False), strengths, saim, name
        self._copies: dict[tuple[torch.device, torch.dtype], DualAdapter] = {}

    def layer(self, site: AttnSite, like: torch.Tensor) -> DualAttention:
        key = (like.device, like.dtype)
        if key not in self._copies:
            master = next(self.adapter.parameters())
            same = master.device == like.device and master.dtype == like.dtype
            self._copies[key] = self.adapter if same else _cast_copy(self.adapter, like)
        return self._copies[key].layer(site)

    def diffusion_model_wrapper(self, executor: Callable, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        unet = executor.class_obj
        options = _transformer_options(args, kwargs)
        if options.get(MODE) == "write":
            ids = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        else:
            ids = branch_ids(x.shape[0], len(options.get("cond_or_uncond") or [0]), x.device)
        installed = []
        try:
            for site in SD15_SITES:
                for proj in PROJECTIONS:
                    module = unet.get_submodule(f"{site.ldm}.{'to_out.0' if proj == 'to_out' else proj}")
                    previous = module.__dict__.get("forward")
                    module.forward = _branch_forward(module, previous, self, site, proj, ids)
                    installed.append((module, previous))
            return executor(x, *args, **kwargs)
        finally:
            for module, previous in reversed(installed):
                if previous is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = previous


def _cast_copy(adapter: DualAdapter, like: torch.Tensor) -> DualAdapter:
    import copy

    return copy.deepcopy(adapter).to(device=like.device, dtype=like.dtype)


def _transformer_options(args: tuple, kwargs: dict) -> dict:
    # UNetModel._forward(x, timesteps, context, y, control, transformer_options, **kwargs)
    if "transformer_options" in kwargs:
        return kwargs["transformer_options"]
    return args[4] if len(args) > 4 else {}


def _branch_forward(module, previous, patch: DualPatch, site: AttnSite, proj: str, ids: torch.Tensor) -> Callable:
    base = previous if previous is not None else functools.partial(type(module).forward, module)

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        lora = patch.layer(site, x).lora(proj)
        return base(x, *args, **kwargs) + lora(x, ids, patch.strengths)

    return forward


class SAIMPatch(Shared):
    """attn1/attn2 output patch: SAIM on the attention output of the site this block belongs to."""

    def __init__(self, dual: DualPatch, kind: str) -> None:
        self.dual, self.kind = dual, kind

    def __call__(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        if not self.dual.saim or extra_options.get(MODE) == "write":
            return n
        site = SD15_BY_BLOCK[(tuple(extra_options["block"]), self.kind)]
        saim = self.dual.layer(site, n).saim
        return n if saim is None else saim(n)


def find_dual(model) -> DualPatch | None:
    """The ``DualPatch`` a Load Dual LoRA node put on this MODEL (or on one of its ancestors' clones)."""
    import comfy.patcher_extension

    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY):
        owner = getattr(wrapper, "__self__", None)
        if isinstance(owner, DualPatch):
            return owner
    return None


def apply_dual(model, dual: DualPatch):
    """Clone ``model`` and install the per-branch LoRA wrapper and the SAIM output patches."""
    import comfy.patcher_extension

    if find_dual(model) is not None:
        raise ValueError("this MODEL already has a Dual LoRA; connect Load Dual LoRA to the plain checkpoint MODEL")
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, dual.diffusion_model_wrapper)
    if dual.adapter.config.saim:
        m.set_model_attn1_output_patch(SAIMPatch(dual, SELF))
        m.set_model_attn2_output_patch(SAIMPatch(dual, CROSS))
    return m


def unet_widths(model) -> tuple[tuple[int, ...], int]:
    """(channels per level, cross-attention width) of a ComfyUI SD-family MODEL."""
    config = model.model.model_config.unet_config
    channels = tuple(int(config["model_channels"]) * int(m) for m in config["channel_mult"])
    return channels, int(config.get("context_dim") or 0)


def check_sd15_layout(model) -> None:
    """Refuse models without the 32 SD1.5 attention sites, naming the first one missing."""
    for site in SD15_SITES:
        try:
            model.get_model_object(f"diffusion_model.{site.ldm}.to_q")
        except AttributeError:
            raise ValueError(
                f"this MODEL is not SD1.5: it has no attention 'diffusion_model.{site.ldm}' "
                "(DualAnoDiff models are trained on Stable Diffusion 1.5)"
            ) from None


class BCMPatch(Shared):
    """Background compensation on a MODEL that carries a BCM-trained ``DualPatch``.

    background: (1 or N, 4, h, w) VAE latents of the object-blackened background, unscaled as in the authors'
    code; grey: the latent of a flat mid-grey image, used for the uncond chunk as the authors do.
    """

    def __init__(self, dual: DualPatch, background: torch.Tensor, grey: torch.Tensor, strength: float, seed: int = 0):
        self.dual, self.background, self.grey, self.strength, self.seed = dual, background, grey, strength, seed

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
        if bg.shape[-2:] != like.shape[-2:]:
            bg = torch.nn.functional.interpolate(bg, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return bg

    def apply_model_wrapper(self, executor: Callable, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options=None, **kwargs):  # fmt: skip
        options = dict(transformer_options or {})
        cond_or_uncond = list(options.get("cond_or_uncond") or [0])
        per_chunk = x.shape[0] // len(cond_or_uncond)
        bg = self._background_rows(cond_or_uncond, per_chunk // 2, x)
        sigma = t[0::2] if t.dim() else t
        g = torch.Generator(device="cpu").manual_seed(self.seed + int(float(t.flatten()[0]) * 1e4))
        noisy = bg + sigma.reshape(-1, 1, 1, 1).to(bg) * torch.randn(bg.shape, generator=g).to(bg)
        bank: dict[str, torch.Tensor] = {}
        context = c_crossattn[0::2] if c_crossattn is not None else None
        executor(noisy, sigma, None, context, None, {**options, MODE: "write", BANK: bank})
        return executor(x, t, c_concat, c_crossattn, control, {**options, MODE: "read", BANK: bank}, **kwargs)

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        mode, bank = extra_options.get(MODE), extra_options.get(BANK)
        if bank is None or mode not in ("write", "read"):
            return n, context, value
        site = SD15_BY_BLOCK[(tuple(extra_options["block"]), SELF)]
        if mode == "write":
            bank[site.ldm] = n
            return n, context, value
        bcm = self.dual.layer(site, n).bcm
        mixed = bcm.kv_source(context, bank[site.ldm].to(context), self.strength)
        return n, mixed, mixed


def apply_bcm(model, patch: BCMPatch):
    import comfy.patcher_extension

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY + "_bcm", patch.apply_model_wrapper)
    m.set_model_attn1_patch(patch)
    return m


def apply_text_lora(clip, tensors: dict[str, torch.Tensor], rank: int, alpha: float, strength: float):
    """Clone ``clip`` and add the shared text-encoder LoRA as ordinary weight patches (comfy.lora key map)."""
    import comfy.lora

    lora = dict(tensors)
    if alpha != rank:
        for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
            lora[key[: -len(".lora_A.weight")] + ".alpha"] = torch.tensor(float(alpha))
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    loaded = comfy.lora.load_lora(lora, key_map, log_missing=False)
    expected = sum(k.endswith(".lora_A.weight") for k in tensors)
    if len(loaded) != expected:
        raise ValueError(
            f"the text-encoder LoRA matched {len(loaded)} of {expected} CLIP projections; is this CLIP from SD1.5?"
        )
    c = clip.clone()
    c.add_patches(loaded, strength)
    return c
