"""Which pixels of a stored mask are defect: the one rule every mask reader calls (training sets, eval,
localisation, layouts, export, filter, region files).

* ``half``: a pixel above half the value range is defect (> 127 of 255, > 32767 of 65535, > 0.5 as a float), as
  MVTec AD's 0/255 masks and the authors' loaders; an integer mask whose largest value is 1 is a 0/1 mask and its
  1s are defect. MVTec AD, MPDD, BTAD, plain ``images/`` + ``masks/`` folders, generated trees, region files.
* ``nonzero``: any non-zero pixel is defect. VisA's raw masks are label maps (defect pixels hold 1, 2, ..., and
  VisA's own preparation scripts binarise with ``!= 0``), so a mask in a VisA ``<category>/Data/Masks/`` folder is
  read this way (``rule_for``).

A mask that has non-zero pixels but none above 127 (of 255) gets one log line saying which rule was applied and
what came out, once per folder and rule, so a VisA category is not a wall of warnings.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from .imageio import _decode

log = logging.getLogger(__name__)

HALF = "half"
NONZERO = "nonzero"
RULES = (HALF, NONZERO)
VISA_MASK_FOLDER = ("Data", "Masks")
"""VisA keeps its label masks in ``<category>/Data/Masks/<Anomaly>/``."""

_noticed: set[tuple[str, str]] = set()
_lock = threading.Lock()


def rule_for(path: str | os.PathLike) -> str:
    """The rule the dataset layout defines for a mask file: ``nonzero`` under VisA's ``Data/Masks/<folder>/``,
    else ``half``."""
    parts = Path(path).parts
    return NONZERO if tuple(parts[-4:-2]) == VISA_MASK_FOLDER else HALF


def _half_level(m: np.ndarray, name: str) -> float:
    if np.issubdtype(m.dtype, np.integer):
        return float(np.iinfo(m.dtype).max // 2)
    if np.issubdtype(m.dtype, np.floating):
        return 0.5
    raise TypeError(f"{name} must be bool, integer or float, got dtype {m.dtype}")


def _notice(name: str, key: str, rule: str, top: float, half: float, pixels: int) -> None:
    with _lock:
        if (key, rule) in _noticed:
            return
        _noticed.add((key, rule))
    again = f" (not repeated for the other masks in {key})" if key != name else ""
    if rule == NONZERO:
        log.warning(
            "%s: no value above %g (largest %g): read as a label mask, every non-zero pixel is defect "
            "(%d px; VisA's rule)%s",
            name,
            half,
            top,
            pixels,
            again,
        )
    elif top == 1 and pixels:
        log.warning("%s: a 0/1 mask, its 1s are defect (%d px; half-brightness rule)%s", name, pixels, again)
    else:
        log.warning(
            "%s: no value above %g (largest %g): the half-brightness rule leaves it empty; label masks "
            "(1, 2, ... per defect) count non-zero only in VisA's Data/Masks folders, so save this one as "
            "0/255%s",
            name,
            half,
            top,
            again,
        )


def binarise(mask: np.ndarray, rule: str = HALF, name: str = "mask", key: str | None = None) -> np.ndarray:
    """``(H, W)`` bool defect pixels of a stored mask under ``rule`` (module docstring).

    mask: ``(H, W)`` or ``(H, W, C)`` (a colour mask counts its brightest of the first three channels), bool,
    integer (8 or 16 bit) or float in [0, 1]. name: how the one-line notice names the mask; key: what it is
    reported once for (default: the name; readers pass the mask's folder)."""
    if rule not in RULES:
        raise ValueError(f"mask rule must be one of {', '.join(RULES)}, got {rule!r}")
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., :3].max(axis=2)
    if m.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {np.asarray(mask).shape}")
    if m.dtype == bool:
        return m
    half = _half_level(m, name)
    top = float(m.max(initial=0))
    if rule == NONZERO or (np.issubdtype(m.dtype, np.integer) and top == 1):
        out = m > 0
    else:
        out = m > half
    if 0 < top <= half:
        _notice(name, key or name, rule, top, half, int(out.sum()))
    return out


def read_binary_mask(path: str | os.PathLike, rule: str | None = None) -> np.ndarray:
    """``(H, W)`` bool defect pixels of a mask file, under ``rule`` (default: ``rule_for(path)``); a
    ``DataError`` naming the file when it cannot be read."""
    path = Path(path)
    return binarise(_decode(path, "mask"), rule or rule_for(path), f"mask {path}", f"{path.parent}")


__all__ = ["HALF", "NONZERO", "RULES", "VISA_MASK_FOLDER", "binarise", "read_binary_mask", "rule_for"]
