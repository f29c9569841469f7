"""Inference fast path of the per-branch LoRA: the delta is added inside the GEMM that makes it.

``base + BranchLoRA(x)`` costs, besides its two skinny GEMMs, a copy of x (einsum's layout), a pass to scale the
delta and a pass to add it. Here the scale goes into the small up factors and the add into ``baddbmm``, so the
activations are read once by each GEMM and nothing else. Same result as ``lora.branch_lora_delta`` (tested).
"""

from __future__ import annotations

import torch

from .lora import branch_lora_delta, cast_like


def _autocast(x: torch.Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled()
    except RuntimeError:  # a device type without autocast (meta)
        return False


def add_branch_lora(
    base: torch.Tensor, x: torch.Tensor, branch_ids: torch.Tensor, down: torch.Tensor, up: torch.Tensor,
    row_scale: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``base + up[b] @ down[b] @ x * row_scale[b]`` per row b = branch_ids[row].

    base: (R, ..., out) the frozen Linear's output; x: (R, ..., in); down: (F, r, in); up: (F, out, r);
    row_scale: (F,). Writes into ``base`` when autograd does not need it (a fresh Linear output).
    """
    if base.dtype != x.dtype or _autocast(x):  # mixed precision: the plain path, which casts as it goes
        return base + branch_lora_delta(x, branch_ids, down, up, row_scale).to(base.dtype)
    rows = x.shape[0]
    ids = branch_ids.to(device=x.device, dtype=torch.long)
    hidden = torch.bmm(x.reshape(rows, -1, x.shape[-1]), cast_like(down, x).index_select(0, ids).transpose(1, 2))
    up_rows = cast_like(up, x).index_select(0, ids) * cast_like(row_scale, x).index_select(0, ids).view(-1, 1, 1)
    out = base.reshape(rows, -1, base.shape[-1])
    in_place = not (torch.is_grad_enabled() and (base.requires_grad or hidden.requires_grad)) and out.data_ptr() == base.data_ptr()
    if in_place:
        out.baddbmm_(hidden, up_rows.transpose(1, 2))
        return base
    return torch.baddbmm(out, hidden, up_rows.transpose(1, 2)).view(base.shape)
