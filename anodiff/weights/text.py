"""The text-encoder LoRA: one adapter on CLIP's self-attention projections, shared by both prompts.

Official: diffusers 0.18's monkey-patched rank-32 LoRA on q/k/v/out of all 12 CLIP ``self_attn`` modules,
``network_alpha=None`` (scale 1), down ~ N(0, 1/rank), up = 0 (peft's ``init_lora_weights="gaussian"``).

``TextLoRA`` is the one implementation, for every host: ``anodiff train`` and the diffusers pipeline put its
``TextDelta`` on transformers' CLIP as a weight parametrization (``torch.nn.utils.parametrize``), the ComfyUI nodes
put the same ``TextDelta`` on ComfyUI's CLIP as a ModelPatcher weight wrapper; both compute ``W + s * up @ down``.
Not peft: peft's injection initialises module by module in the encoder's order, which a host without peft
(ComfyUI) cannot reproduce, so the same seed would give two models; here the init order is the sorted names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from .schema import TEXT_PROJECTIONS

CANONICAL_PREFIX = "text_model."
TEXT_KEY = re.compile(r"(text_model\.encoder\.layers\.\d+\.self_attn\.(?:" + "|".join(TEXT_PROJECTIONS) + r"))$")


def text_shapes(named_modules: Iterable[tuple[str, nn.Module]]) -> dict[str, tuple[int, int]]:
    """Canonical name -> (in, out) of a CLIP text model's q/k/v/out projections (transformers or ComfyUI; any
    prefix before ``text_model``, or none: transformers 5 puts the text transformer at the top level)."""
    out = {}
    for name, module in named_modules:
        m = TEXT_KEY.search(name if "text_model." in name else CANONICAL_PREFIX + name)
        if m and getattr(module, "weight", None) is not None and module.weight.dim() == 2:
            out[m[1]] = (module.weight.shape[1], module.weight.shape[0])
    return out


class TextLoRA(nn.Module):
    """The shared text-encoder LoRA as plain factors. ``shapes``: canonical module name -> (in, out).

    Init in sorted-name order from the global RNG: down ~ N(0, 1/rank), up = 0; ``scale`` = alpha / rank.
    ``state()`` keys: ``text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight`` (the weight-file schema).
    """

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.names = sorted(shapes)
        self.rank, self.scale = rank, (float(rank) if alpha is None else float(alpha)) / rank
        self.down = nn.ParameterList([nn.Parameter(torch.empty(rank, shapes[n][0])) for n in self.names])
        self.up = nn.ParameterList([nn.Parameter(torch.zeros(shapes[n][1], rank)) for n in self.names])
        for p in self.down:
            nn.init.normal_(p, std=1.0 / rank)

    def delta(self, name: str) -> torch.Tensor:
        """(out, in) weight delta ``scale * up @ down`` of module ``name``."""
        i = self.names.index(name)
        delta = self.up[i] @ self.down[i]
        return delta if self.scale == 1.0 else delta * self.scale

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, down, up in zip(self.names, self.down, self.up):
            out[f"{name}.lora_A.weight"] = down.detach().float().cpu().contiguous()
            out[f"{name}.lora_B.weight"] = up.detach().float().cpu().contiguous()
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = set(self.state())
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors)) or sorted(set(tensors) - expected)
            raise ValueError(f"text-encoder LoRA does not fit this CLIP: key {missing[0]!r} differs")
        with torch.no_grad():
            for i, name in enumerate(self.names):
                self.down[i].copy_(tensors[f"{name}.lora_A.weight"])
                self.up[i].copy_(tensors[f"{name}.lora_B.weight"])


class TextDelta(nn.Module):
    """``weight -> weight + lora.delta(name)`` in the weight's dtype: a parametrization of a transformers projection
    and a ComfyUI weight wrapper alike. The LoRA is held outside this module (its owner registers it once)."""

    def __init__(self, lora: TextLoRA, name: str) -> None:
        super().__init__()
        self._lora, self.name = (lora,), name

    @property
    def lora(self) -> TextLoRA:
        return self._lora[0]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.lora.delta(self.name).to(weight)


ATTRIBUTE = "anodiff_text_lora"
"""The text encoder's sub-module holding the attached ``TextLoRA`` (so ``to``, ``parameters`` and DDP see it once)."""


def attached_lora(text_encoder: nn.Module) -> TextLoRA | None:
    """The ``TextLoRA`` that ``attach_text_lora`` put on this transformers text encoder, if any."""
    lora = getattr(text_encoder, ATTRIBUTE, None)
    return lora if isinstance(lora, TextLoRA) else None


def attach_text_lora(text_encoder: nn.Module, lora: TextLoRA) -> TextLoRA:
    """Put ``lora`` on a transformers CLIP text model as weight parametrizations; refused when one is there."""
    if attached_lora(text_encoder) is not None:
        raise ValueError("the text encoder already carries a text-encoder LoRA; load it again")
    found = 0
    for name, module in list(text_encoder.named_modules()):
        canonical = next(iter(text_shapes([(name, module)])), None)
        if canonical in lora.names:
            parametrize.register_parametrization(module, "weight", TextDelta(lora, canonical))
            found += 1
    if found != len(lora.names):
        raise ValueError(f"text-encoder LoRA: {len(lora.names)} projections, the text encoder has {found} of them")
    lora.to(next(text_encoder.parameters()).device)
    text_encoder.add_module(ATTRIBUTE, lora)
    return lora


def add_text_lora(text_encoder: nn.Module, rank: int, alpha: float | None = None) -> nn.Module:
    """A fresh ``TextLoRA`` (init from the global RNG) on a transformers CLIP text model, in place; returns the
    text encoder (``attached_lora`` gives the LoRA)."""
    shapes = text_shapes(text_encoder.named_modules())
    if not shapes:
        raise ValueError("text encoder has no CLIP self-attention projections (text_model...self_attn.q_proj)")
    attach_text_lora(text_encoder, TextLoRA(shapes, rank, alpha))
    return text_encoder


def text_lora_state(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The attached LoRA's tensors keyed like ``text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight``."""
    lora = attached_lora(text_encoder)
    if lora is None:
        raise ValueError("the text encoder carries no text-encoder LoRA")
    return lora.state()


def load_text_lora(text_encoder: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load tensors from ``text_lora_state`` into a text encoder that has ``add_text_lora`` applied."""
    lora = attached_lora(text_encoder)
    if lora is None:
        raise ValueError("load_text_lora: call add_text_lora on the text encoder first")
    lora.load(tensors)
