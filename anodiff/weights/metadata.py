"""Reading a DualAnoDiff file's string metadata back into a validated ``DualFile``: every field parsed with an
error that names the file and the field (the writing side is ``schema.build_metadata``)."""

from __future__ import annotations

import torch

from ..model.config import DualConfig
from .schema import FORMAT_VERSION, DualFile, DualWeightsError, validate


def _parse_bool(meta: dict[str, str], key: str, source: str) -> bool:
    value = meta.get(key, "false").lower()
    if value not in ("true", "false"):
        raise DualWeightsError(f"{source}: metadata {key!r} must be 'true' or 'false', got {value!r}")
    return value == "true"


def _parse_int(meta: dict[str, str], key: str, source: str, default: str | None = None) -> int:
    value = meta.get(key, default)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DualWeightsError(f"{source}: metadata {key!r} must be an integer, got {value!r}") from None


def _parse_float(meta: dict[str, str], key: str, source: str, default: str) -> float:
    value = meta.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DualWeightsError(f"{source}: metadata {key!r} must be a number, got {value!r}") from None


def from_metadata(tensors: dict[str, torch.Tensor], meta: dict[str, str], source: str) -> DualFile:
    version = _parse_int(meta, "format_version", source)
    if version > FORMAT_VERSION:
        raise DualWeightsError(
            f"{source}: format_version {version} is newer than this anodiff ({FORMAT_VERSION}); upgrade"
        )
    try:
        channels = tuple(int(c) for c in meta["unet_channels"].split(","))
    except (KeyError, ValueError):
        raise DualWeightsError(f"{source}: metadata 'unet_channels' must be like '320,640,1280,1280'") from None
    config = DualConfig(
        rank=_parse_int(meta, "rank", source),
        alpha=_parse_float(meta, "alpha", source, meta["rank"]),
        saim=_parse_bool(meta, "has_saim", source),
        saim_zero_init=_parse_bool(meta, "saim_zero_init", source),
        bcm=_parse_bool(meta, "has_bcm", source),
        text_rank=_parse_int(meta, "text_rank", source, "32"),
        text_alpha=_parse_float(meta, "text_alpha", source, meta.get("text_rank", "32")),
    )
    dual = DualFile(config, channels, _parse_int(meta, "context_dim", source), tensors, dict(meta), source)
    validate(dual)
    return dual
