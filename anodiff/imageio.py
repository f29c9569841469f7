"""Image files: atomic PNG writes shared by the generator, the trainer's previews and the exporters."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .masks import as_float_image


def write_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write: encode, write a temporary file beside the target, rename over it.

    image: (H, W, 3) float in [0, 1] or uint8 RGB, or (H, W) uint8 grey.
    """
    if image.dtype != np.uint8:
        image = np.round(as_float_image(image, str(path)) * 255.0).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_atomic(path, data.tobytes())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; decoded from bytes so non-ASCII paths work on every OS."""
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
