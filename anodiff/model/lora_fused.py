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
    base: torch.Tensor,
    x: torch.Tensor,
    branch_ids: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    row_scale: torch.Tensor,
) -> torch.Tensor:
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
    in_place = (
        not (torch.is_grad_enabled() and (base.requires_grad or hidden.requires_grad))
        and out.data_ptr() == base.data_ptr()
    )
    if in_place:
        out.baddbmm_(hidden, up_rows.transpose(1, 2))
        return base
    return torch.baddbmm(out, hidden, up_rows.transpose(1, 2)).view(base.shape)


def merge_pays(tokens: int, in_features: int, out_features: int, branches: int = 2) -> bool:
    """Whether merging the LoRA into per-branch weights (``branches * in * out * rank`` multiply-adds, once per
    call) is cheaper than the rank path over ``tokens`` rows (``tokens * (in + out) * rank``)."""
    return branches * in_features * out_features < tokens * (in_features + out_features)


def merged_branch_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    branch_ids: list[int],
    down: torch.Tensor,
    up: torch.Tensor,
    row_scale: torch.Tensor,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` plus each row's branch LoRA, with the LoRA merged into one weight per branch:
    no extra work per token at all (inference; ``x``: (R, N, in), ``branch_ids``: R ints)."""
    scaled_up = cast_like(up, x) * cast_like(row_scale, x).view(-1, 1, 1)
    merged = torch.baddbmm(weight.expand(up.shape[0], -1, -1), scaled_up, cast_like(down, x))  # (F, out, in)
    out = torch.empty(*x.shape[:-1], weight.shape[0], device=x.device, dtype=x.dtype)
    for row, branch in enumerate(branch_ids):
        if bias is None:
            torch.mm(x[row], merged[branch].T, out=out[row])
        else:
            torch.addmm(bias, x[row], merged[branch].T, out=out[row])
    return out
