"""LATENT and CONDITIONING in the pair layout [g0, a0, g1, a1, ...] that any ComfyUI sampler can run.

A paired LATENT carries ``PAIRED`` (its row count) so that pairing it again is a no-op (a second pass) and its
``batch_index`` counts rows, so both rows of a pair get their own noise. A paired CONDITIONING has batch 2
[global; anomaly], which ComfyUI tiles over the 2N rows. Both carry the stamps of ``stamps.py``; no output holds
rows a core node would not see (the anomaly rows of a pair are always in "samples").
"""

from __future__ import annotations

import math

import torch

from ...anodiff.model.pairs import interleave, split
from .stamps import PAIRED, REFUSED_OPTIONS, check_paired, mark_paired, stamp_conditioning


def pair_latent(latent: dict, anomaly: dict | None = None, node: str = "Pair Latent") -> dict:
    """N latents -> 2N interleaved rows (the anomaly rows from ``anomaly`` when given, else a copy).

    noise_mask: one per latent is shared by both rows of its pair. batch_index b -> rows 2b, 2b + 1, so with
    batch_index 0..N-1 the noise is exactly that of an unindexed batch. A LATENT that is already paired is
    checked (``check_paired``) and returned as is.
    """
    if latent.get(PAIRED):
        if anomaly is not None:
            raise ValueError(f"{node}: 'latent' is already paired; leave 'anomaly' unconnected")
        check_paired(latent, node)
        return dict(latent)
    samples = latent["samples"]
    anomaly_rows = samples if anomaly is None else anomaly["samples"]
    if anomaly is not None and anomaly.get(PAIRED):
        raise ValueError(f"{node}: 'anomaly' is a paired latent; connect Split Pairs' anomaly output instead")
    if anomaly_rows.shape != samples.shape:
        raise ValueError(
            f"{node}: 'anomaly' has shape {tuple(anomaly_rows.shape)} and 'latent' {tuple(samples.shape)}; "
            "give both branches the same size and batch (apply a resize or upscale to both)"
        )
    out = {k: v for k, v in latent.items() if k != "samples"}
    out["samples"] = mark_paired(interleave(samples, anomaly_rows))
    mask = latent.get("noise_mask")
    if mask is not None and mask.shape[0] != 1:  # one mask: ComfyUI gives it to every row, as it should
        count = samples.shape[0]
        if mask.shape[0] != count:  # tile by pair, as ComfyUI would tile it over the N unpaired latents
            mask = mask.repeat(math.ceil(count / mask.shape[0]), *([1] * (mask.dim() - 1)))[:count]
        out["noise_mask"] = interleave(mask, mask)
    if latent.get("batch_index") is not None:
        out["batch_index"] = [2 * int(i) + branch for i in latent["batch_index"] for branch in (0, 1)]
    out[PAIRED] = int(out["samples"].shape[0])
    return out


def split_pairs(latent: dict, node: str = "Split Pairs") -> tuple[dict, dict]:
    """2N interleaved rows -> (global, anomaly) plain LATENTs of N (nothing hidden: a second pass that refines
    both branches takes the 'pairs' LATENT, or both outputs through Pair Latent's 'anomaly')."""
    samples = latent["samples"]
    if not latent.get(PAIRED):
        raise ValueError(f"{node}: the latent is not paired; connect the output of a sampler fed by Pair Latent")
    check_paired(latent, node)
    glob, anomaly = split(samples)
    plain = {k: v for k, v in latent.items() if k not in ("samples", PAIRED, "noise_mask", "batch_index")}
    mask = latent.get("noise_mask")
    if mask is not None:
        plain["noise_mask"] = mask[0::2] if mask.shape[0] == samples.shape[0] else mask
    if latent.get("batch_index") is not None:
        plain["batch_index"] = [int(i) // 2 for i in latent["batch_index"][0::2]]
    return {**plain, "samples": glob}, {**plain, "samples": anomaly}


def refuse_unpairable(conditioning: list, what: str) -> None:
    """ValueError naming ``what`` when a conditioning carries options that cannot follow the pairs."""
    for _, options in conditioning:
        for key, name in REFUSED_OPTIONS.items():
            if options.get(key) is not None:
                raise ValueError(
                    f"{what} carries {name}; its hints are tiled over the batch by index, not by pair, so the two "
                    "rows of a pair would get different hints (and the grey anomaly canvas the photo's). "
                    "DualAnoDiff does not support it"
                )


def _repeat_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    return t.repeat(1, length // t.shape[1], *([1] * (t.dim() - 2)))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # objects without a usable == (tensors inside containers)
        return a is b


def merge_options(g_opts: dict, a_opts: dict) -> dict:
    """Options of the batch-2 [global; anomaly] cond: per-prompt tensors (batch 1 each, e.g. pooled_output) are
    stacked, equal values are kept, and anything else that differs is refused by name."""
    merged = {}
    for key in dict.fromkeys([*g_opts, *a_opts]):
        g, a = g_opts.get(key), a_opts.get(key)
        if _same(g, a):
            merged[key] = g
        elif (
            isinstance(g, torch.Tensor)
            and isinstance(a, torch.Tensor)
            and g.shape[0] == a.shape[0] == 1
            and g.shape[1:] == a.shape[1:]
        ):
            merged[key] = torch.cat([g, a])
        else:
            raise ValueError(
                f"the global and anomaly prompts differ in their conditioning option '{key}'; one paired batch "
                "takes that option once for both branches. Set it the same way on both prompts (or on neither)"
            )
    return merged


def pair_conditioning(positive_global: list, positive_anomaly: list) -> list:
    """One CONDITIONING whose tensors have batch 2 ``[global; anomaly]``.

    ComfyUI tiles a cond to the latent batch (``repeat_to_batch_size``), so rows [g, a, g, a, ...] get the
    global and the anomaly prompt in turn, matching the interleaved latents. Prompts of different lengths
    (77 vs 154 tokens) are repeated to a common length, as ComfyUI does when it batches conds.
    """
    refuse_unpairable(positive_global, "positive_global")
    refuse_unpairable(positive_anomaly, "positive_anomaly")
    if len(positive_global) != len(positive_anomaly):
        raise ValueError(
            f"positive_global has {len(positive_global)} conditioning entries and positive_anomaly "
            f"{len(positive_anomaly)}; connect one CLIP Text Encode to each"
        )
    paired = []
    for (g, g_opts), (a, a_opts) in zip(positive_global, positive_anomaly):
        if g.shape[0] != 1 or a.shape[0] != 1:
            raise ValueError("each positive prompt must be a single conditioning (batch 1), not a batch")
        length = math.lcm(g.shape[1], a.shape[1])
        tensor = torch.cat([_repeat_tokens(g, length), _repeat_tokens(a, length)])
        paired.append([tensor, stamp_conditioning(tensor, merge_options(g_opts, a_opts))])
    return paired
