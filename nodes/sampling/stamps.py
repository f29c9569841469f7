"""Pair stamps: a dual MODEL samples only conditioning and latents that went through the pair nodes.

Core ComfyUI nodes copy a LATENT or CONDITIONING dict with all its entries, so an entry saying "paired" cannot
prove the rows still are. The stamps are therefore tied to the tensors themselves:

- Pair Conditioning writes the fingerprint of its [global; anomaly] tensor into the cond options; a core node
  that changes the tensor (Conditioning Concat, Average...) leaves a stale fingerprint.
- Pair Latent marks its output tensor (an attribute: a core latent op returns a new tensor without it), and a
  dual MODEL registers the fingerprint of every batch it samples, so a sampler's output is known to be pairs
  on any device. Latent Flip, Rotate, Composite, Upscale, From Batch... return tensors that are neither.

The dual MODEL checks both before sampling (``check_sampling``, from an OUTER_SAMPLE wrapper); Pair Latent and
Split Pairs check a LATENT they are given (``check_paired``). Every refusal names the node to add or remove.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

PAIRED = "anodiff_pairs"  # LATENT entry: the row count Pair Latent made (2N)
PAIR_COND = "anodiff_pair_conditioning"  # cond option: fingerprint of Pair Conditioning's tensor
MARK = "_anodiff_paired"  # attribute on a tensor Pair Latent made
REFUSED_OPTIONS = {
    "control": "a ControlNet or T2I-Adapter (remove Apply ControlNet from the dual graph)",
    "gligen": "GLIGEN (remove GLIGEN Textbox Apply from the dual graph)",
}
"""Conditioning options that ComfyUI applies by hint/box index over the whole batch, so pairs cannot keep them."""
REGISTRY_SIZE = 4096
_sampled: OrderedDict[str, None] = OrderedDict()  # fingerprints of batches a dual MODEL sampled (bounded, LRU)
OPS = "Latent Flip, Rotate, Composite, Upscale Latent, Latent From Batch, Repeat Latent Batch, Latent Batch..."


def fingerprint(t: torch.Tensor) -> str:
    """Content hash (shape and values in float16, so ComfyUI's ``--fp16-intermediates`` copy of a sampler's
    float32 output hashes the same): cheap for latents and prompt embeddings."""
    data = t.detach().to("cpu", torch.float16).contiguous()
    digest = hashlib.blake2b(str(tuple(data.shape)).encode(), digest_size=16)
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def mark_paired(samples: torch.Tensor) -> torch.Tensor:
    setattr(samples, MARK, True)
    return samples


def register_sampled(samples: torch.Tensor) -> None:
    key = fingerprint(samples)
    _sampled[key] = None
    _sampled.move_to_end(key)
    while len(_sampled) > REGISTRY_SIZE:
        _sampled.popitem(last=False)


def is_paired(samples: torch.Tensor) -> bool:
    return bool(getattr(samples, MARK, False)) or fingerprint(samples) in _sampled


def check_paired(latent: dict, node: str) -> None:
    """ValueError naming ``node`` when a LATENT marked as pairs no longer holds the rows the pair nodes made."""
    samples, rows = latent["samples"], latent.get(PAIRED)
    if isinstance(rows, int) and not isinstance(rows, bool) and samples.shape[0] != rows:
        raise ValueError(
            f"{node}: the paired latent has {samples.shape[0]} rows where Pair Latent made {rows}; a core node "
            "changed its batch (Latent From Batch, Repeat Latent Batch, Latent Batch...), which splits or mixes "
            "the [global, anomaly] pairs. Remove it, or use it before Pair Latent or after Split Pairs"
        )
    if not is_paired(samples):
        raise ValueError(
            f"{node}: the paired latent's rows were changed after pairing by a core node ({OPS}), or sampled by "
            "a MODEL without a Dual LoRA; the two rows of a pair no longer match. Remove that node, or apply it "
            "before Pair Latent, or after Split Pairs to both outputs and pair them again (Pair Latent's anomaly)"
        )


def stamp_conditioning(tensor: torch.Tensor, options: dict) -> dict:
    return {**options, PAIR_COND: fingerprint(tensor)}


def _refuse_options(conds: dict) -> None:
    for group, entries in conds.items():
        for entry in entries or []:
            for key, name in REFUSED_OPTIONS.items():
                if entry.get(key) is not None:
                    raise ValueError(
                        f"the {group} conditioning of a Dual LoRA MODEL carries {name}: its hints are tiled over "
                        "the batch by index, not by pair, so the two rows of a pair would get different hints"
                    )


def check_sampling(conds: dict, latent_image: torch.Tensor) -> None:
    """What a dual MODEL requires of a sampler run: paired positives, no hints, paired latents.

    conds: the guider's {"positive": [...], "negative": [...]} (other guiders: any names; "negative" may be plain).
    """
    _refuse_options(conds)
    for group, entries in conds.items():
        if group == "negative":
            continue
        for entry in entries or []:
            stamp, tensor = entry.get(PAIR_COND), entry.get("cross_attn")
            if stamp is None or tensor is None or stamp != fingerprint(tensor):
                changed = "was changed after Pair Conditioning by a core node" if stamp else "is not paired"
                raise ValueError(
                    f"this MODEL carries a Dual LoRA, which samples [global, anomaly] pairs, but its {group} "
                    f"conditioning {changed}. Connect the sampler's {group} to Pair Conditioning (and its latent to "
                    "Pair Latent, its output to Split Pairs), or use Dual Sampler (SAIM)"
                )
    if not is_paired(latent_image):
        raise ValueError(
            "this MODEL carries a Dual LoRA, which samples [global, anomaly] pairs, but its latent did not come "
            f"from Pair Latent (or its rows were changed after it by a core node: {OPS}). Put Pair Latent right "
            "before the sampler, or use Dual Sampler (SAIM)"
        )


def outer_sample_wrapper(executor, *args, **kwargs):
    """``CFGGuider.outer_sample(noise, latent_image, ...)``: check the run, then register its output as pairs."""
    guider = executor.class_obj
    latent_image = args[1] if len(args) > 1 else kwargs["latent_image"]
    check_sampling(getattr(guider, "original_conds", None) or {}, latent_image)
    out = executor(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        register_sampled(out)
    return out
