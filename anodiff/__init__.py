"""anodiff: the DualAnoDiff model (pair layout, per-branch LoRA, SAIM, BCM, weight files) without ComfyUI."""

from __future__ import annotations

__version__ = "0.1.0"

from .bcm import BackgroundCompensation
from .config import PROMPT_ANOMALY, PROMPT_GLOBAL, DualConfig
from .dual import DualAdapter, DualAttention
from .lora import BranchLoRA
from .pairs import ANOMALY, GLOBAL, branch_ids, interleave, split
from .saim import SAIM
from .sites import SD15_SITES, AttnSite
from .weights import DualFile, DualWeightsError, load_dual, pack

__all__ = [
    "ANOMALY", "GLOBAL", "PROMPT_ANOMALY", "PROMPT_GLOBAL", "SAIM", "SD15_SITES", "AttnSite", "BackgroundCompensation",
    "BranchLoRA", "DualAdapter", "DualAttention", "DualConfig", "DualFile", "DualWeightsError", "branch_ids",
    "interleave", "load_dual", "pack", "split",
]  # fmt: skip
