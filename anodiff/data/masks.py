"""Anomaly masks from the anomaly branch's image: the defect drawn alone on a mid-grey canvas.

The diffusion model gives no mask. The authors run U²-Net on the anomaly ("fg") image, min-max normalise the
saliency, and their localisation loader binarises it at > 0.5 (dualanodiff-reference.md §8). We offer that with
the 4.6 MB U²-Net-P (``method="u2netp"``), and a model-free alternative (``method="grey"``) that scores each pixel
by how far it strays from the grey canvas, min-max normalised the same way so one ``threshold`` means the same
thing for both. Morphology (``grow``) and small-component removal (``min_area``) are our additions; both default to off.

Images are numpy arrays ``(H, W, 3)``, RGB, either ``uint8`` or float in [0, 1]. Nothing here imports torch or
ComfyUI; onnxruntime is imported only when a ``U2NetP`` first runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..common.assets import FETCH_HINT, u2netp_path
from ..common.imageio import as_float_image, resize

log = logging.getLogger(__name__)

METHODS = ("u2netp", "grey")
GREY_RANGE = 0.5  # the largest possible distance from the mid-grey canvas in [0, 1] space
CANVAS = 0.5
"""The anomaly branch's background: 0 in the VAE's [-1, 1] space, i.e. 0.5 (about 128/255) in [0, 1]."""


def _check_unit(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer number of pixels, got {value!r}")
    return int(value)


def _min_max(score: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] as the authors do; a constant map becomes all zeros (nothing stands out)."""
    lo, hi = float(score.min()), float(score.max())
    if hi - lo <= 1e-8:
        return np.zeros_like(score, dtype=np.float32)
    return ((score - lo) / (hi - lo)).astype(np.float32)


def grey_distance(image: np.ndarray, canvas: float | None = CANVAS) -> np.ndarray:
    """``(H, W)`` float32: per pixel, the largest absolute deviation of any channel from the grey canvas.

    image: ``(H, W, 3)`` uint8 or float in [0, 1]. canvas: the background level in [0, 1]; ``None`` takes the
    per-channel median of the image instead, which follows a canvas the decoder tinted or shifted (the defect
    must then cover less than half the image). Values lie in [0, max(canvas, 1 - canvas)].
    """
    x = as_float_image(image)
    if canvas is None:
        level = np.median(x.reshape(-1, 3), axis=0).astype(np.float32)
    else:
        level = np.float32(_check_unit(canvas, "canvas"))
    return np.abs(x - level).max(axis=2)


class U2NetP:
    """U²-Net-P saliency through onnxruntime (rembg's ONNX conversion), loaded on first use.

    Pre-processing follows rembg (offline-assets.md §6.3): 320×320 RGB, ``x / x.max()``, ImageNet mean/std,
    NCHW float32 into ``input.1``; the first output's map is min-max normalised and resized back.
    """

    SIZE = 320
    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

    def __init__(self, path: str | os.PathLike | None = None, providers: Sequence[str] | None = None) -> None:
        """path: the ``u2netp.onnx`` file (default: ``anodiff.common.assets.u2netp_path()``). providers: onnxruntime
        execution providers in order of preference (default: CUDA when available, then CPU)."""
        self.path = Path(path) if path is not None else u2netp_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"U²-Net-P model {self.path} does not exist. {FETCH_HINT}")
        self.providers = tuple(providers) if providers is not None else None
        self._session: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"U2NetP({str(self.path)!r})"

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession``, created once."""
        with self._lock:
            if self._session is None:
                self._session = self._load()
            return self._session

    def _load(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                "the u2netp mask method needs onnxruntime: `pip install onnxruntime` (or onnxruntime-gpu), "
                "or use the grey method, which needs no model"
            ) from err
        providers = self.providers
        if providers is None:
            available = ort.get_available_providers()
            providers = tuple(p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available)
        session = ort.InferenceSession(str(self.path), providers=list(providers))
        log.info("loaded %s with %s", self.path, session.get_providers())
        return session

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """``(1, 3, 320, 320)`` float32 network input from an ``(H, W, 3)`` image."""
        x = as_float_image(image)
        x = resize(x, self.SIZE, self.SIZE)
        peak = float(x.max())
        if peak > 0:
            x = x / peak
        x = (x - self.MEAN) / self.STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    def saliency(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 in [0, 1]: min-max normalised U²-Net-P saliency at the image's own size."""
        x = self.preprocess(image)
        session = self.session
        name = session.get_inputs()[0].name
        pred = np.asarray(session.run(None, {name: x})[0], dtype=np.float32)[0, 0]
        pred = _min_max(pred)
        h, w = image.shape[:2]
        return np.clip(cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def anomaly_map(
    image: np.ndarray, method: str = "u2netp", model: U2NetP | None = None, canvas: float | None = CANVAS
) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: how strongly each pixel belongs to the defect.

    method: ``"u2netp"`` (saliency, min-max normalised as the authors' U²-Net maps; ``model`` or one found by
    ``anodiff.common.assets.u2netp_path``) or ``"grey"`` (``grey_distance`` from ``canvas`` on an absolute scale:
    1 = as far from mid-grey as a pixel can be, so a blank anomaly image gives an empty mask instead of
    stretched noise).
    """
    if method not in METHODS:
        raise ValueError(f"unknown mask method {method!r}; use one of {', '.join(METHODS)}")
    if method == "grey":
        return np.clip(grey_distance(image, canvas) / GREY_RANGE, 0.0, 1.0).astype(np.float32)
    if model is None:
        model = U2NetP()
    elif not isinstance(model, U2NetP):
        raise TypeError(f"model must be a U2NetP, got {type(model).__name__}")
    return model.saliency(image)


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``(H, W)`` bool: ``mask`` without the 8-connected components of fewer than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask.astype(bool)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def grow_mask(mask: np.ndarray, grow: int) -> np.ndarray:
    """``(H, W)`` bool: dilate by ``grow`` pixels when positive, erode by ``-grow`` when negative (disc kernel)."""
    if grow == 0:
        return mask.astype(bool)
    r = abs(grow)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    op = cv2.dilate if grow > 0 else cv2.erode
    return op(mask.astype(np.uint8), kernel).astype(bool)


def extract_mask(
    image: np.ndarray,
    method: str = "u2netp",
    threshold: float = 0.5,
    grow: int = 0,
    min_area: int = 0,
    model: U2NetP | None = None,
    canvas: float | None = CANVAS,
) -> np.ndarray:
    """``(H, W)`` bool defect mask of an anomaly-branch image ``(H, W, 3)``.

    Pixels whose ``anomaly_map`` exceeds ``threshold`` (the authors binarise at > 0.5); then components under
    ``min_area`` pixels are dropped (measured before ``grow``, so it judges the detected regions, not the margin);
    then ``grow`` pixels are added (positive) or taken away (negative) all round.
    """
    if method not in METHODS:
        raise ValueError(f"unknown mask method {method!r}; use one of {', '.join(METHODS)}")
    threshold = _check_unit(threshold, "threshold")
    grow = _check_int(grow, "grow")
    min_area = _check_int(min_area, "min_area")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0 pixels, got {min_area}")
    score = anomaly_map(image, method, model=model, canvas=canvas)
    mask = remove_small(score > threshold, min_area)
    return grow_mask(mask, grow)


def overlay(
    image: np.ndarray, mask: np.ndarray, color: Sequence[float] = (1.0, 0.0, 0.0), alpha: float = 0.5
) -> np.ndarray:
    """``(H, W, 3)`` preview: ``image`` with the mask tinted by ``color`` at ``alpha`` and its contour drawn.

    image: uint8 or float in [0, 1] (the result has the same kind). mask: ``(H, W)`` bool, or float where
    > 0.5 counts. color: RGB in [0, 1].
    """
    x = as_float_image(image)
    mask = np.asarray(mask)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have the image's size {x.shape[:2]}, got shape {mask.shape}")
    if mask.dtype != bool:
        mask = mask > 0.5
    if len(color) != 3:
        raise ValueError(f"color must be 3 values (R, G, B) in [0, 1], got {tuple(color)}")
    rgb = np.array([_check_unit(c, "color") for c in color], dtype=np.float32)
    alpha = _check_unit(alpha, "alpha")
    out = x.copy()
    out[mask] = (1.0 - alpha) * x[mask] + alpha * rgb
    if mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        thickness = max(1, round(min(x.shape[:2]) / 256))
        cv2.drawContours(out, contours, -1, tuple(float(c) for c in rgb), thickness)
    if image.dtype == np.uint8:
        return np.round(out * 255.0).astype(np.uint8)
    return out


__all__ = [
    "CANVAS",
    "METHODS",
    "U2NetP",
    "anomaly_map",
    "as_float_image",
    "extract_mask",
    "grey_distance",
    "grow_mask",
    "overlay",
    "remove_small",
]
