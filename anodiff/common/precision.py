"""Mixed precision in one place: the names the command line takes and the autocast/scaler networks train under.

``no`` is fp32; ``bf16`` and ``fp16`` run on CPUs too (what the tests use); ``fp16`` needs a loss scaler, which
``grad_scaler`` provides on CUDA and CPU (a disabled scaler elsewhere, so callers need no branch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

PRECISIONS = ("no", "fp16", "bf16")
DTYPES = {"no": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name (``no`` and ``fp32`` are fp32): one table for every command."""
    if name not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str) -> torch.autocast:
    """Matmuls and convolutions in ``precision``'s dtype on ``device``; off for ``no``."""
    dtype = torch_dtype(check_precision(precision))
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=precision != "no")


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA and CPU (fp16 gradients underflow without it); a pass-through otherwise."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type in ("cuda", "cpu"))


def autocasting(fn: Callable[..., Any], device: torch.device | str, precision: str) -> Callable[..., Any]:
    """``fn`` called under ``autocast(device, precision)``."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with autocast(device, precision):
            return fn(*args, **kwargs)

    return run


def fallback_fp16_scaler(accelerator: Any, precision: str) -> torch.amp.GradScaler | None:
    """accelerate autocasts and loss-scales fp16 only on GPUs; where it does not (CPU) but fp16 was asked for, the
    caller runs its fp16 network under ``autocasting`` and this scaler (the fp16 weights would meet fp32 inputs
    otherwise). None when accelerate handles the precision itself."""
    if precision != "fp16" or accelerator.native_amp:
        return None
    return grad_scaler(accelerator.device, precision)


def training_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> float:
    """One optimiser step on ``loss`` through ``scaler``; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()
