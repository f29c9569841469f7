"""Train Dual LoRA's hold on ComfyUI's models: training clones, the UNet forward, and leaving nothing behind.

The trainable ``DualAdapter`` goes on a ``clone()`` of the user's MODEL through the same per-branch LoRA wrapper
and SAIM/BCM patches as inference (``patch.py``, ``bcm_patch.py``), unfolded so gradients reach every factor.
The text-encoder LoRA goes on a ``clone()`` of the CLIP as weight wrappers, the way core's Train LoRA trains.
Weights made under ``torch.inference_mode`` (any model a loader node built) cannot be saved for backward, so
those get an identity weight wrapper on the clone, which makes ComfyUI cast a normal copy at each use.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
import torch.utils.checkpoint

from ...anodiff.model.bcm import write_then_read
from ...anodiff.model.dual import DualAdapter
from ...anodiff.weights.text import TextDelta, TextLoRA
from ..model.bcm_patch import BCMPatch
from ..model.patch import BANK, MODE, DualPatch, apply_dual, compute_dtype


def _normal_copy(weight: torch.Tensor) -> torch.Tensor:
    return weight  # its presence makes comfy.ops copy the weight (cast_to(copy=True)) outside inference mode


def unfreeze_inference_weights(patcher) -> int:
    """Identity weight wrappers on every inference-mode weight/bias of a (cloned) patcher; returns how many."""
    count = 0
    for name, module in patcher.model.named_modules():
        if not hasattr(module, "weight_function"):
            continue
        for part in ("weight", "bias"):
            tensor = getattr(module, part, None)
            key = f"{name}.{part}"
            if tensor is not None and tensor.is_inference() and key not in patcher.weight_wrapper_patches:
                patcher.add_weight_wrapper(key, _normal_copy)
                count += 1
    return count


def training_model(model, adapter: DualAdapter):
    """A clone of ``model`` that runs the trainable adapter (and its BCM), loadable by ComfyUI."""
    patch = DualPatch(adapter, (1.0, 1.0), saim=adapter.config.saim, name="training", fold=False)  # as trained
    m = apply_dual(model, patch)
    if adapter.config.bcm:
        m.set_model_attn1_patch(BCMPatch(patch, background=None, grey=None, strength=1.0))
    unfreeze_inference_weights(m)
    return m


def training_clip(clip, text: TextLoRA | None):
    """A clone of ``clip`` whose text projections carry ``text`` as weight wrappers (or none)."""
    c = clip.clone()
    if text is not None:
        for name, _ in c.cond_stage_model.named_modules():
            for canonical in text.names:
                if name.endswith(canonical):
                    c.patcher.add_weight_wrapper(f"{name}.weight", TextDelta(text, canonical))
    unfreeze_inference_weights(c.patcher)
    return c


def prompt_context(clip, prompts: tuple[str, str], trainable: bool) -> Callable[[], torch.Tensor]:
    """() -> (2, 77, C) [global, anomaly] text states; encoded once when the text encoder is frozen."""
    tokens = [clip.tokenize(p) for p in prompts]

    def encode() -> torch.Tensor:
        return torch.cat([clip.encode_from_tokens(t) for t in tokens])

    if trainable:
        return encode
    with torch.no_grad():
        fixed = encode()
    return lambda: fixed


def unet_forward(m, context: Callable[[], torch.Tensor]) -> Callable:
    """``step.Forward`` on ComfyUI's UNet: DDPM-noised latents and integer timesteps in, predicted noise out.

    Calls the diffusion model as ``BaseModel._apply_model`` does, minus the sigma scaling (the step noises in
    DDPM space), with the clone's patches and wrappers in ``transformer_options``. BCM: a write pass on the
    noised backgrounds with the global prompt, then the read pass (``bcm.write_then_read``, as every host).
    """
    import comfy.patcher_extension

    unet, dtype, device = m.model.diffusion_model, compute_dtype(m), m.load_device

    def options(**extra) -> dict:
        opts = comfy.patcher_extension.copy_nested_dicts(m.model_options.get("transformer_options", {}))
        comfy.patcher_extension.merge_nested_dicts(opts.setdefault("wrappers", {}), m.wrappers, copy_dict1=False)
        return {**opts, "cond_or_uncond": [0], **extra}

    def forward(noisy: torch.Tensor, timesteps: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
        ctx = context().to(device, dtype).repeat(noisy.shape[0] // 2, 1, 1)
        t = timesteps.to(device).float()

        def call(latents, timesteps, rows_context, mode: str | None = None, bank: dict | None = None):
            extra = {} if bank is None else {MODE: mode, BANK: bank}
            return unet(
                latents.to(device, dtype), timesteps, context=rows_context, transformer_options=options(**extra)
            )

        if background is None:
            return call(noisy, t, ctx)
        return write_then_read(call, noisy, t, ctx, background)

    return forward


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """No gradient for the base weights while training; their ``requires_grad`` flags are restored after.
    (Inference-mode weights are skipped: autograd never tracks them, and their flag cannot be set back.)"""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters() if not p.is_inference()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def checkpointed_blocks(unet: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing on every ResBlock and SpatialTransformer, removed on exit.

    The block's ``transformer_options`` dict is copied per call: the UNet keeps writing its position
    (``block``, ``transformer_index``) into the one dict, and the recomputation must see the value of its call.
    """
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    installed = []
    try:
        if enabled:
            for module in unet.modules():
                if isinstance(module, (ResBlock, SpatialTransformer)) and "forward" not in module.__dict__:
                    module.forward = _checkpointed(module)
                    installed.append(module)
        yield
    finally:
        for module in installed:
            module.__dict__.pop("forward", None)


def _checkpointed(module: torch.nn.Module) -> Callable:
    """The block's forward under non-reentrant checkpointing. The per-branch LoRA ``forward`` overrides that
    ``DualPatch``'s wrapper installs only for the UNet call are put back for the recomputation in backward."""
    forward = functools.partial(type(module).forward, module)

    def run(*args, **kwargs):
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        overrides = [
            (m, m.__dict__["forward"]) for m in module.modules() if m is not module and "forward" in m.__dict__
        ]

        def replay(*a, **k):
            previous = [(m, m.__dict__.get("forward")) for m, _ in overrides]
            for m, f in overrides:
                m.forward = f
            try:
                return forward(*a, **k)
            finally:
                for m, f in previous:
                    if f is None:
                        m.__dict__.pop("forward", None)
                    else:
                        m.forward = f

        return torch.utils.checkpoint.checkpoint(replay, *args, use_reentrant=False, **kwargs)

    return run


@contextlib.contextmanager
def differentiable_clip(text_model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Out-of-place residual adds in ComfyUI's CLIP layers while the text LoRA trains, removed on exit.

    ``comfy.clip_model.CLIPLayer.forward`` adds its attention and MLP outputs to ``x`` in place, after
    ``layer_norm1(x)`` saved ``x`` for backward, so autograd refuses it. Same sums, out of place.
    """
    installed = []
    try:
        if enabled:
            for module in text_model.modules():
                parts = ("self_attn", "layer_norm1", "mlp", "layer_norm2")
                if type(module).__name__ == "CLIPLayer" and all(hasattr(module, a) for a in parts):
                    module.forward = functools.partial(_clip_layer_forward, module)
                    installed.append(module)
        yield
    finally:
        for module in installed:
            module.__dict__.pop("forward", None)


def _clip_layer_forward(layer: torch.nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    x = x + layer.self_attn(layer.layer_norm1(x), *args, **kwargs)
    return x + layer.mlp(layer.layer_norm2(x))


def release(*patchers) -> None:
    """Unload the training clones from ComfyUI's loaded models: their weight wrappers and patches come off."""
    import comfy.model_management as mm

    for i in reversed(range(len(mm.current_loaded_models))):  # as mm.free_memory unloads: unload, then pop
        loaded = mm.current_loaded_models[i]
        if any(loaded.model is p for p in patchers) and loaded.model_unload():
            mm.current_loaded_models.pop(i)
    for patcher in patchers:  # a full unload leaves weight functions on the modules until the next load
        for module in patcher.model.modules():
            for attr in ("weight_function", "bias_function"):
                functions = getattr(module, attr, None)
                if functions and any(_ours(f) for f in functions):
                    setattr(module, attr, [f for f in functions if not _ours(f)])


def _ours(function) -> bool:
    return isinstance(function, TextDelta) or function is _normal_copy
