"""The DualAnoDiff batch layout: pairs interleaved along the batch axis.

Every UNet batch holds rows ``[g0, a0, g1, a1, ...]`` (global branch, anomaly branch), the einops
``(b f)`` layout with ``f = 2`` innermost, as in the official code. ComfyUI concatenates several
cond/uncond *chunks* of ``2N`` rows each; pairs never straddle a chunk, so the branch of row ``r`` is
``(r % rows_per_chunk) % 2`` and the partner of row ``r`` is always ``r ^ 1``.
"""

from __future__ import annotations

import torch
from einops import rearrange

GLOBAL = 0
ANOMALY = 1
BRANCHES = 2
BRANCH_NAMES = ("global", "anomaly")


def check_rows(rows: int, chunks: int = 1, what: str = "batch") -> int:
    """Validate a row count for the pair layout and return the rows per chunk."""
    if chunks < 1:
        raise ValueError(f"{what}: chunk count must be >= 1, got {chunks}")
    if rows % chunks:
        raise ValueError(f"{what}: {rows} rows cannot be split into {chunks} equal cond/uncond chunks")
    per_chunk = rows // chunks
    if per_chunk % BRANCHES:
        raise ValueError(
            f"{what}: each chunk needs an even number of rows laid out [global, anomaly, ...], "
            f"got {per_chunk} rows per chunk ({rows} rows, {chunks} chunk(s))"
        )
    return per_chunk


def interleave(global_rows: torch.Tensor, anomaly_rows: torch.Tensor) -> torch.Tensor:
    """(N, ...) + (N, ...) -> (2N, ...) as [g0, a0, g1, a1, ...]."""
    if global_rows.shape != anomaly_rows.shape:
        raise ValueError(
            f"interleave: global and anomaly rows must have equal shapes, got {tuple(global_rows.shape)} "
            f"and {tuple(anomaly_rows.shape)}"
        )
    return rearrange(torch.stack([global_rows, anomaly_rows], dim=1), "b f ... -> (b f) ...")


def split(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2N, ...) as [g0, a0, ...] -> (global (N, ...), anomaly (N, ...))."""
    check_rows(pairs.shape[0], what="split")
    grouped = rearrange(pairs, "(b f) ... -> f b ...", f=BRANCHES)
    return grouped[GLOBAL], grouped[ANOMALY]


def branch_ids(rows: int, chunks: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """Branch index (0 global, 1 anomaly) of every row of a batch made of ``chunks`` equal chunks.

    ``chunks`` is ``len(cond_or_uncond)`` in ComfyUI (1 when cond or uncond runs alone, 2 with CFG).
    """
    per_chunk = check_rows(rows, chunks)
    return (torch.arange(rows, device=device) % per_chunk) % BRANCHES


def row_branches(
    rows: int, chunks: int, write: bool, device: torch.device | str | None = None
) -> tuple[torch.Tensor, list[int]]:
    """The branch of every row as a tensor on ``device`` and as a Python list (for code that picks weights per
    row without a device sync). ``write``: BCM's background pass, where every row runs the global branch."""
    if write:
        return torch.zeros(rows, dtype=torch.long, device=device), [GLOBAL] * rows
    per_chunk = check_rows(rows, chunks)
    return branch_ids(rows, chunks, device), [(r % per_chunk) % BRANCHES for r in range(rows)]
