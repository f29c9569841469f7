"""The DualAnoDiff weight file: one ``.safetensors`` per trained model, and readers for it.

Key schema (``<site>`` is the diffusers attention path, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn1``;
all 32 sites of SD1.5, see ``anodiff.model.sites``; ``<branch>`` is ``global`` or ``anomaly``)::

    unet.<site>.<to_q|to_k|to_v|to_out>.<branch>.down    (rank, in)
    unet.<site>.<to_q|to_k|to_v|to_out>.<branch>.up      (out, rank)
    unet.<site>.saim.norm.{weight,bias}                  (C,)              when has_saim
    unet.<site>.saim.<proj_in|to_q|to_k|to_v|proj_out>.{weight (C, C), bias (C,)}
    unet.<site>.bcm.mlp.0.{weight (320, C), bias (320,)}                   when has_bcm, attn1 sites only
    unet.<site>.bcm.mlp.1.{weight (C, 320), bias (C,)}
    unet.<site>.bcm.a                                    (1,)
    text_encoder.text_model.encoder.layers.<i>.self_attn.<q|k|v|out>_proj.lora_A.weight  (text_rank, hidden)
    text_encoder.text_model.encoder.layers.<i>.self_attn.<q|k|v|out>_proj.lora_B.weight  (hidden, text_rank)

The LoRA delta of a projection is ``(alpha / rank) * up @ down @ x``. Metadata (all strings): see ``META_FIELDS``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from ..common.files import write_atomic
from ..model.config import PROMPT_ANOMALY, PROMPT_GLOBAL, DualConfig
from ..model.dual import PROJECTIONS, DualAdapter
from ..model.pairs import BRANCH_NAMES
from ..model.sites import SD15_CHANNELS, SD15_CONTEXT_DIM

log = logging.getLogger(__name__)

FORMAT = "dualanodiff"
FORMAT_VERSION = 1
UNET_PREFIX = "unet."
TEXT_PREFIX = "text_encoder."
SD15_TEXT_HIDDEN, SD15_TEXT_LAYERS = 768, 12
TEXT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
META_FIELDS = (
    "format",
    "format_version",
    "base_model",
    "unet_channels",
    "context_dim",
    "rank",
    "alpha",
    "has_saim",
    "saim_zero_init",
    "has_bcm",
    "text_rank",
    "text_alpha",
    "text_hidden",
    "text_layers",
    "prompt_global",
    "prompt_anomaly",
    "steps",
    "resolution",
    "source",
    "seed",
    "train_images",
)
OPTIONAL_META_FIELDS = ("seed", "train_images")
"""Written by a training run only (its seed, how many photos it trained on); every other field is always there."""


class DualWeightsError(ValueError):
    """A weight file that is not a DualAnoDiff SD1.5 model, with the file and the first bad key named."""


def adapter_tensors(adapter: DualAdapter) -> dict[str, torch.Tensor]:
    """The UNet part of the file schema from a ``DualAdapter`` (per-branch tensors unstacked)."""
    out: dict[str, torch.Tensor] = {}
    for site, layer in adapter.items():
        prefix = f"{UNET_PREFIX}{site.diffusers}."
        for proj in PROJECTIONS:
            lora = layer.lora(proj)
            for b, branch in enumerate(BRANCH_NAMES):
                out[f"{prefix}{proj}.{branch}.down"] = lora.down[b]
                out[f"{prefix}{proj}.{branch}.up"] = lora.up[b]
        for name in ("saim", "bcm"):
            module = getattr(layer, name)
            if module is not None:
                out.update({f"{prefix}{name}.{k}": v for k, v in module.state_dict().items()})
    return {k: v.detach().contiguous() for k, v in out.items()}


def text_shapes(rank: int, hidden: int, layers: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{TEXT_PREFIX}text_model.encoder.layers.{i}.self_attn.{proj}.{ab}.weight": shape
        for i in range(layers)
        for proj in TEXT_PROJECTIONS
        for ab, shape in (("lora_A", (rank, hidden)), ("lora_B", (hidden, rank)))
    }


def unet_shapes(config: DualConfig, channels: tuple[int, ...], context_dim: int) -> dict[str, tuple[int, ...]]:
    """Expected UNet keys and shapes, read off an adapter built on the meta device (no memory, one source of truth)."""
    with torch.device("meta"):
        adapter = DualAdapter(config, channels, context_dim)
    return {k: tuple(v.shape) for k, v in adapter_tensors(adapter).items()}


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ``DualWeightsError`` on the first mis-shaped, unknown or missing key (in that order)."""
    for key, value in tensors.items():
        if key not in expected:
            raise DualWeightsError(f"{source}: unexpected key {key!r} with shape {_fmt(tuple(value.shape))}")
        got = tuple(value.shape)
        if got != expected[key]:
            raise DualWeightsError(
                f"{source}: key {key!r} has shape {_fmt(got)}, expected {_fmt(expected[key])} for this model"
            )
        if not torch.is_floating_point(value):
            raise DualWeightsError(f"{source}: key {key!r} has dtype {value.dtype}, expected a floating point tensor")
    for key, shape in expected.items():
        if key not in tensors:
            raise DualWeightsError(
                f"{source}: missing key {key!r} (expected shape {_fmt(shape)}); truncated or partial file?"
            )


@dataclass
class DualFile:
    """A loaded, validated DualAnoDiff model: configuration, metadata and tensors in the file schema."""

    config: DualConfig
    channels: tuple[int, ...]
    context_dim: int
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def prompts(self) -> tuple[str, str]:
        return self.metadata.get("prompt_global", PROMPT_GLOBAL), self.metadata.get("prompt_anomaly", PROMPT_ANOMALY)

    @property
    def has_text_lora(self) -> bool:
        return any(k.startswith(TEXT_PREFIX) for k in self.tensors)

    def check_unet(self, channels: tuple[int, ...], context_dim: int) -> None:
        """Refuse a UNet whose widths differ from the ones the file was trained for."""
        if tuple(channels) != self.channels or int(context_dim) != self.context_dim:
            raise DualWeightsError(
                f"{self.source}: trained for a UNet with channels {self.channels} and text width {self.context_dim}, "
                f"but the model has channels {tuple(channels)} and text width {context_dim} (is it SD1.5?)"
            )

    def adapter(self, dtype: torch.dtype | None = None) -> DualAdapter:
        """Build the ``DualAdapter`` holding these weights (no random init is spent)."""
        with torch.device("meta"):
            adapter = DualAdapter(self.config, self.channels, self.context_dim)
        for site, layer in adapter.items():
            prefix = f"{UNET_PREFIX}{site.diffusers}."
            local = {}
            for proj in PROJECTIONS:
                for part in ("down", "up"):
                    local[f"{proj}.{part}"] = torch.stack(
                        [self.tensors[f"{prefix}{proj}.{branch}.{part}"] for branch in BRANCH_NAMES]
                    )
            for name in ("saim", "bcm"):
                if getattr(layer, name) is not None:
                    local.update(
                        {f"{name}.{k}": self.tensors[f"{prefix}{name}.{k}"] for k in getattr(layer, name).state_dict()}
                    )
            layer.load_state_dict({k: (v.to(dtype) if dtype else v.clone()) for k, v in local.items()}, assign=True)
        return adapter

    def text_tensors(self) -> dict[str, torch.Tensor]:
        """Text-encoder LoRA keyed for ``anodiff.weights.text.load_text_lora`` (``text_model.encoder...``)."""
        return {k[len(TEXT_PREFIX) :]: v for k, v in self.tensors.items() if k.startswith(TEXT_PREFIX)}

    def save(self, path: str | os.PathLike) -> Path:
        return save_dual(path, self.tensors, self.metadata)


def _meta_bool(value: bool) -> str:
    return "true" if value else "false"


def build_metadata(
    config: DualConfig,
    channels: tuple[int, ...],
    context_dim: int,
    text_hidden: int = 0,
    text_layers: int = 0,
    **extra: object,
) -> dict[str, str]:
    base = "sd15" if (tuple(channels), context_dim) == (SD15_CHANNELS, SD15_CONTEXT_DIM) else "sd15-layout"
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "base_model": base,
        "unet_channels": ",".join(str(c) for c in channels),
        "context_dim": str(context_dim),
        "rank": str(config.rank),
        "alpha": f"{config.lora_alpha:g}",
        "has_saim": _meta_bool(config.saim),
        "saim_zero_init": _meta_bool(config.saim_zero_init),
        "has_bcm": _meta_bool(config.bcm),
        "text_rank": str(config.text_rank),
        "text_alpha": f"{config.text_lora_alpha:g}",
        "text_hidden": str(text_hidden),
        "text_layers": str(text_layers),
        "prompt_global": PROMPT_GLOBAL,
        "prompt_anomaly": PROMPT_ANOMALY,
        "steps": "0",
        "resolution": "512",
        "source": "anodiff",
    }
    meta.update({k: str(v) for k, v in extra.items()})
    unknown = set(meta) - set(META_FIELDS)
    if unknown:
        raise ValueError(f"unknown metadata field(s) {sorted(unknown)}; known: {META_FIELDS}")
    return meta


def to_dual_file(
    adapter: DualAdapter,
    text: dict[str, torch.Tensor] | None = None,
    text_hidden: int = 0,
    text_layers: int = 0,
    **extra: object,
) -> DualFile:
    """Bundle a trained adapter (and the text LoRA from ``anodiff.weights.text.text_lora_state``) as a ``DualFile``."""
    tensors = adapter_tensors(adapter)
    tensors.update({TEXT_PREFIX + k: v.detach().contiguous() for k, v in (text or {}).items()})
    if text and not (text_hidden and text_layers):
        first = next(iter(text.values()))
        text_hidden = first.shape[1]
        text_layers = 1 + max(int(re.search(r"layers\.(\d+)\.", k).group(1)) for k in text)
    meta = build_metadata(adapter.config, adapter.channels, adapter.context_dim, text_hidden, text_layers, **extra)
    result = DualFile(adapter.config, adapter.channels, adapter.context_dim, tensors, meta)
    validate(result)
    return result


def validate(dual: DualFile) -> None:
    expected = unet_shapes(dual.config, dual.channels, dual.context_dim)
    hidden, layers = int(dual.metadata.get("text_hidden", 0)), int(dual.metadata.get("text_layers", 0))
    if layers:
        expected.update(text_shapes(dual.config.text_rank, hidden, layers))
    check_tensors(dual.tensors, expected, dual.source)


def save_dual(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically (``anodiff.common.files.write_atomic``): a temporary file beside it, then a rename."""
    path = Path(path)
    write_atomic(path, safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))
    return path
