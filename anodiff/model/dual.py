"""The trainable part of a DualAnoDiff UNet: one ``DualAttention`` per attention site.

Both adapters (the diffusers processor and the ComfyUI patches) call these modules, so the model math
exists once. Nothing here knows which framework runs the frozen UNet.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .bcm import BackgroundCompensation
from .config import DualConfig
from .lora import BranchLoRA
from .saim import SAIM
from .sites import SD15_SITES, AttnSite, site_dims

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")


class DualAttention(nn.Module):
    """Per-branch LoRA on q/k/v/out, optional SAIM on the output, optional BCM on the K/V source."""

    def __init__(self, dim: int, kv_dim: int, config: DualConfig, is_self: bool) -> None:
        super().__init__()
        self.dim, self.kv_dim, self.is_self = dim, kv_dim, is_self
        alpha = config.lora_alpha
        self.to_q = BranchLoRA(dim, dim, config.rank, alpha)
        self.to_k = BranchLoRA(kv_dim, dim, config.rank, alpha)
        self.to_v = BranchLoRA(kv_dim, dim, config.rank, alpha)
        self.to_out = BranchLoRA(dim, dim, config.rank, alpha)
        self.saim = SAIM(dim, zero_init_out=config.saim_zero_init) if config.saim else None
        self.bcm = BackgroundCompensation(dim) if (config.bcm and is_self) else None

    def lora(self, projection: str) -> BranchLoRA:
        if projection not in PROJECTIONS:
            raise KeyError(f"unknown projection {projection!r}; expected one of {PROJECTIONS}")
        return getattr(self, projection)


def _key(site: AttnSite) -> str:
    return site.diffusers.replace(".", "__")


class DualAdapter(nn.Module):
    """All 32 ``DualAttention``s of an SD1.5-topology UNet, addressed by ``AttnSite``.

    ``channels``/``context_dim`` give the UNet width (SD1.5: (320, 640, 1280, 1280) and 768); tests use a
    narrow UNet with the same block layout.
    """

    def __init__(
        self,
        config: DualConfig,
        channels: tuple[int, ...],
        context_dim: int,
        sites: Iterable[AttnSite] = SD15_SITES,
    ) -> None:
        super().__init__()
        self.config = config
        self.channels, self.context_dim = tuple(channels), int(context_dim)
        self.sites = tuple(sites)
        self.layers = nn.ModuleDict()
        for site in self.sites:
            dim, kv_dim = site_dims(site, self.channels, self.context_dim)
            self.layers[_key(site)] = DualAttention(dim, kv_dim, config, site.is_self)

    def layer(self, site: AttnSite) -> DualAttention:
        return self.layers[_key(site)]

    def items(self) -> Iterable[tuple[AttnSite, DualAttention]]:
        return ((site, self.layer(site)) for site in self.sites)

    def values(self) -> Iterable[DualAttention]:
        """The 32 attentions in site order (``items()`` without the sites)."""
        return (self.layer(site) for site in self.sites)

    def zero_lora_(self) -> DualAdapter:
        """Set every LoRA up-factor to zero (identity LoRA); used by tests and by "SAIM only" ablations."""
        with torch.no_grad():
            for layer in self.values():
                for name in PROJECTIONS:
                    layer.lora(name).up.zero_()
        return self
