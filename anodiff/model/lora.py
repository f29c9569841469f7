"""Per-branch LoRA: one low-rank delta per branch on a shared frozen Linear.

Official: every q/k/v/out projection carries two ``LoRALinearLayer``s, index 0 for the global (blend)
branch and 1 for the anomaly (fg) branch, picked by batch position. Here both branches' factors are
stacked so one vectorised pass serves any mix of rows (peft's mixed-batch forward, without the loop).
"""

from __future__ import annotations

import torch
from torch import nn

from .pairs import BRANCHES


def cast_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Move a pack tensor to the device and dtype of the activations it meets (no copy when equal)."""
    return t.to(device=x.device, dtype=x.dtype)


def check_activation(x: torch.Tensor, features: int, what: str) -> None:
    if not torch.is_floating_point(x):
        raise TypeError(f"{what}: expected a floating point tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != features:
        raise ValueError(f"{what}: expected shape (rows, ..., {features}), got {tuple(x.shape)}")


def branch_lora_delta(
    x: torch.Tensor,
    branch_ids: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    row_scale: torch.Tensor,
) -> torch.Tensor:
    """Low-rank delta ``up[b] @ down[b] @ x`` for each row with its own branch ``b``.

    x: (R, ..., in); branch_ids: (R,) long; down: (F, r, in); up: (F, out, r); row_scale: (F,) factor per
    branch (alpha / rank times the user strength). Returns (R, ..., out) in x's dtype.
    """
    if branch_ids.shape != (x.shape[0],):
        raise ValueError(
            f"branch_ids must have shape ({x.shape[0]},) to match the rows of x, got {tuple(branch_ids.shape)}"
        )
    ids = branch_ids.to(device=x.device, dtype=torch.long)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    hidden = torch.einsum("bni,bri->bnr", flat, cast_like(down, x)[ids])
    out = torch.einsum("bnr,bor->bno", hidden, cast_like(up, x)[ids])
    out = out * cast_like(row_scale, x)[ids].view(-1, 1, 1)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class BranchLoRA(nn.Module):
    """LoRA factors for one Linear, one set per branch.

    down: (branches, rank, in_features), initialised normal with std 1/rank (official);
    up: (branches, out_features, rank), zeros, so a fresh module changes nothing.
    scale = alpha / rank; the official code passes ``network_alpha=None``, i.e. alpha = rank.
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int = 32, alpha: float | None = None, branches: int = BRANCHES
    ) -> None:
        super().__init__()
        if rank < 1 or rank > min(in_features, out_features):
            raise ValueError(f"LoRA rank must be in [1, {min(in_features, out_features)}], got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.alpha = float(rank if alpha is None else alpha)
        self.down = nn.Parameter(torch.empty(branches, rank, in_features))
        self.up = nn.Parameter(torch.zeros(branches, out_features, rank))
        nn.init.normal_(self.down, std=1.0 / rank)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(
        self, x: torch.Tensor, branch_ids: torch.Tensor, strengths: tuple[float, ...] | torch.Tensor = (1.0, 1.0)
    ) -> torch.Tensor:
        """Delta to add to the base Linear's output. x: (R, ..., in), branch_ids: (R,)."""
        check_activation(x, self.in_features, "BranchLoRA input")
        row_scale = torch.as_tensor(strengths, dtype=torch.float32) * self.scale
        if row_scale.shape != (self.down.shape[0],):
            raise ValueError(
                f"strengths must give one value per branch ({self.down.shape[0]}), got {tuple(row_scale.shape)}"
            )
        return branch_lora_delta(x, branch_ids, self.down, self.up, row_scale)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha:g}"
