"""Dual weight files for Load Dual LoRA: which files are dual weights, and each file folded once.

A safetensors file tells what it is from its header alone (our ``format`` metadata, or the authors' key names),
so the list shows only dual weights and a chosen ordinary LoRA is refused by name at queue time. The authors'
``.bin`` files cannot be read without loading them whole: they are listed, and ``load_dual`` names an ordinary
LoRA when it reads one.

Folding SAIM (and reading the file) costs seconds at SD1.5's size and does not depend on the strengths, so a
file is loaded and folded once per (file version, dtype, device) and shared by every MODEL that uses it. The
cache holds its entries weakly: an entry lives as long as a MODEL that uses it (ComfyUI's node cache included),
so a file no longer used is freed with its last MODEL, and an edited file (new mtime) is read again.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, replace

import torch
from safetensors import SafetensorError, safe_open

from ...anodiff.model.dual import DualAdapter
from ...anodiff.model.saim_fold import inference_adapter
from ...anodiff.weights.convert import describe_foreign, looks_official
from ...anodiff.weights.load import load_dual
from ...anodiff.weights.schema import FORMAT, TEXT_PREFIX, DualFile

_kinds: dict[tuple, str | None] = {}  # (path, mtime_ns, size) -> None (dual weights) or why not


def _stat_key(path: str) -> tuple:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size


def not_dual_reason(path: str) -> str | None:
    """None for a dual weight file (or a ``.bin``, which only loading tells); else why not, naming the file."""
    if not path.lower().endswith(".safetensors"):
        return None
    try:
        key = _stat_key(path)
    except OSError as err:  # removed since the folder was listed
        return f"{os.path.basename(path)}: {err.strerror or err}"
    if key not in _kinds:
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta, keys = f.metadata() or {}, dict.fromkeys(f.keys())
            dual = meta.get("format") == FORMAT or looks_official(keys)
            _kinds[key] = None if dual else describe_foreign(keys, os.path.basename(path))
        except (SafetensorError, OSError, ValueError) as err:
            _kinds[key] = f"{os.path.basename(path)}: not a readable .safetensors file ({err})"
    return _kinds[key]


@dataclass(eq=False)
class FoldedFile:
    """A dual weight file as the MODEL uses it: its description and text LoRA (``dual``, without the UNet
    tensors, which live on folded in ``adapter``) and the frozen adapter with every SAIM folded."""

    dual: DualFile
    adapter: DualAdapter


_folded: weakref.WeakValueDictionary[tuple, FoldedFile] = weakref.WeakValueDictionary()


def folded_file(path: str, dtype: torch.dtype, device: torch.device | str) -> FoldedFile:
    """The file at ``path`` loaded and folded for ``dtype`` on ``device``, from the cache when a MODEL still
    holds it (a strength change, a re-queued graph)."""
    key = (*_stat_key(path), dtype, str(device))
    entry = _folded.get(key)
    if entry is None:
        dual = load_dual(path, sd15_only=False)  # widths are checked against the MODEL by the loader
        adapter = inference_adapter(dual.adapter(), dtype=dtype, device=device)
        text = {k: v for k, v in dual.tensors.items() if k.startswith(TEXT_PREFIX)}
        entry = FoldedFile(replace(dual, tensors=text), adapter)
        _folded[key] = entry
    return entry


def cached_files() -> int:
    """How many folded files are held (by MODELs still alive)."""
    return len(_folded)
