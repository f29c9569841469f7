"""anodiff: the DualAnoDiff model (pair layout, per-branch LoRA, SAIM, BCM, weight files) without ComfyUI."""

from __future__ import annotations

__version__ = "0.1.0"

from .model.bcm import BackgroundCompensation
from .model.config import PROMPT_ANOMALY, PROMPT_GLOBAL, DualConfig
from .model.dual import DualAdapter, DualAttention
from .model.lora import BranchLoRA
from .model.pairs import ANOMALY, GLOBAL, branch_ids, interleave, split
from .model.saim import SAIM
from .model.sites import SD15_SITES, AttnSite
from .weights.load import load_dual
from .weights.schema import DualFile, DualWeightsError, to_dual_file

__all__ = [
    "ANOMALY",
    "GLOBAL",
    "PROMPT_ANOMALY",
    "PROMPT_GLOBAL",
    "SAIM",
    "SD15_SITES",
    "AttnSite",
    "BackgroundCompensation",
    "BranchLoRA",
    "DualAdapter",
    "DualAttention",
    "DualConfig",
    "DualFile",
    "DualWeightsError",
    "branch_ids",
    "interleave",
    "load_dual",
    "split",
    "to_dual_file",
]
