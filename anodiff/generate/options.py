"""The checks and defaults of ``generate``'s arguments: sampler settings, dtype names, folder names."""

from __future__ import annotations

from collections.abc import Sequence

from ..data.masks import METHODS
from ..sd15.schedulers import SCHEDULERS

DUAL_DEFAULTS = (100, 2.5)
"""The authors' steps and guidance for the dual model (``inference_mvtec_split.py``: PNDM, 100 steps, CFG 2.5)."""
BCM_DEFAULTS = (50, 2.0)
"""... and for BCM with backgrounds (``inference_test_tempt.py``: 50 steps, CFG 2.0; they used 1.2 for screw)."""
DTYPES = ("auto", "fp16", "bf16", "fp32")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a plain folder name (no separators, not ``.``/``..``); ``ValueError`` naming ``what``."""
    if not value or value in (".", "..") or any(c in value for c in "/\\"):
        raise ValueError(f"{what} must be a plain folder name, got {value!r}")
    return value


def check_args(
    count: int,
    batch_size: int,
    size: int,
    scheduler: str,
    mask_method: str,
    threshold: float,
    every: int,
    *,
    context: float = 2.0,
    working: int | None = None,
    region_size: Sequence[float] = (0.05, 0.2),
) -> None:
    """``ValueError`` naming the first of ``generate``'s arguments that is out of range; region control's too,
    which the crop window and region sampler would only check after SD1.5 has loaded."""
    for name, value in (("count", count), ("batch_size", batch_size), ("background_every", every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size!r}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if mask_method not in METHODS:
        raise ValueError(f"mask_method must be one of {', '.join(METHODS)}, got {mask_method!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if isinstance(context, bool) or not isinstance(context, (int, float)) or not context >= 1.0:
        raise ValueError(
            f"--context must be a number >= 1 (the crop window is the region's box times it), got {context!r}"
        )
    if working is not None and (
        isinstance(working, bool) or not isinstance(working, int) or working < 8 or working % 8
    ):
        raise ValueError(f"--working must be a positive multiple of 8 (the crop's longer side), got {working!r}")
    try:
        low, high = (float(v) for v in region_size)
    except (TypeError, ValueError):
        raise ValueError(f"--region-size must be two numbers MIN MAX, got {region_size!r}") from None
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"--region-size must satisfy 0 < MIN <= MAX <= 1 (fractions of the image side), got {low:g} {high:g}"
        )


def resolve_dtype(dtype: str, device: str) -> str:
    """The UNet's dtype name: ``auto`` is fp16 on CUDA (SD1.5's usual inference dtype) and fp32 elsewhere."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        return "fp16" if str(device).startswith("cuda") else "fp32"
    return dtype
