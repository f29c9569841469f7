"""Export a generated tree in the layouts of the tools users evaluate detectors with.

**anomalib Folder** (``anomalib.data.Folder`` / ``FolderDataset``), under ``<out>/<category>/``::

    normal/                          real normal images for training (the first part of ``--normal-dir``)
    validation/{normal,abnormal,mask}/   a validation set
    test/{normal,abnormal,mask}/         a test set

``abnormal`` holds generated images named ``<type>_<NNN>.png`` and ``mask`` their 0/255 masks under the same
name. The rules followed are those of anomalib's ``make_folder_dataset`` (``data/datasets/image/folder.py``): it
lists each folder recursively by image suffix, sorts every path together, gives the abnormal images the masks in
that sorted order and refuses a mask whose name does not contain its image's stem, so identical names in
``abnormal`` and ``mask`` pair correctly; ``normal_dir`` images become its training split and ``normal_test_dir`` /
``abnormal_dir`` its test split. Use e.g. ``Folder(name=..., root="<out>/<category>", normal_dir="normal",
abnormal_dir="test/abnormal", normal_test_dir="test/normal", mask_dir="test/mask")``, and ``validation/...`` the same
way for a validation set. Per type the first ``val_share`` of the pairs go to validation, the rest to test; the
normal images (sorted) are split ``1 - 2 * normal_holdout`` / ``normal_holdout`` / ``normal_holdout``.

**ASBench** (M-3LAB/ASBench, its pre-generated-data path ``MVTecDataset_AD``), under ``<out>/<category>/``::

    image/<type>_<NNN>.jpg       the normal image the defect was put into ("origin")
    augmented/<type>_<NNN>.jpg   the generated image
    mask/<type>_<NNN>.jpg        its mask, 0/255

ASBench reads ``sorted(glob(dir + "/*.jpg"))`` of each folder and pairs them by position, does not resize them, and
divides the mask by 255, so all three are JPEG, named alike and at ``size`` x ``size`` (256, its working size). The
origin is the photo the pair's sidecar names (region control), else the nearest image of ``normals``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..common.imageio import IMAGE_EXTENSIONS, read_rgb, write_atomic
from .export import encode_png
from .sidecar import source_photo
from .tree import TreePair, read_mask

log = logging.getLogger(__name__)

TOOLS = ("anomalib", "asbench")
JPEG_QUALITY = 100


def normal_files(folder: str | Path | None) -> list[Path]:
    """The images of ``--normal-dir``, sorted (none without one)."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"--normal-dir {folder} is not a folder of normal images")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not found:
        raise FileNotFoundError(f"--normal-dir {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def _fresh(folder: Path) -> None:
    """Create ``folder``, refusing one that already holds files: a second export would mix two sets."""
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; export into a new --out (these layouts are written whole)")
    folder.mkdir(parents=True, exist_ok=True)


def _name(pair: TreePair) -> str:
    return f"{pair.anomaly}_{pair.index:03d}"


def export_anomalib(
    pairs: Sequence[TreePair],
    out: str | Path,
    normal_dir: str | Path,
    val_share: float = 0.5,
    normal_holdout: float = 0.2,
) -> dict[str, int]:
    """Write the anomalib Folder layout (module docstring); returns the count of files per folder."""
    if not 0.0 < val_share < 1.0 or not 0.0 < normal_holdout < 0.5:
        raise ValueError(f"need 0 < val_share < 1 and 0 < normal_holdout < 0.5, got {val_share}, {normal_holdout}")
    normals = normal_files(normal_dir)
    if len(normals) < 3:
        raise ValueError(f"--normal-dir needs at least 3 normal images (train, validation, test), got {len(normals)}")
    root = Path(out) / pairs[0].category
    held = max(1, round(normal_holdout * len(normals)))
    parts = {
        "normal": normals[: len(normals) - 2 * held],
        "validation/normal": normals[-2 * held : -held],
        "test/normal": normals[-held:],
    }
    for sub in (
        "normal",
        "validation/normal",
        "validation/abnormal",
        "validation/mask",
        "test/normal",
        "test/abnormal",
        "test/mask",
    ):
        _fresh(root / sub)
    counts = {}
    for sub, files in parts.items():
        for path in files:
            shutil.copyfile(path, root / sub / path.name)
        counts[sub] = len(files)
    for anomaly in sorted({p.anomaly for p in pairs}):
        group = [p for p in pairs if p.anomaly == anomaly]
        cut = max(1, round(val_share * len(group))) if len(group) > 1 else 0
        for split, chosen in (("validation", group[:cut]), ("test", group[cut:])):
            for pair in chosen:
                shutil.copyfile(pair.image, root / split / "abnormal" / f"{_name(pair)}.png")  # bit depth kept
                mask = read_mask(pair.mask).astype(np.uint8) * 255
                write_atomic(root / split / "mask" / f"{_name(pair)}.png", encode_png(mask))
                counts[f"{split}/abnormal"] = counts.get(f"{split}/abnormal", 0) + 1
    return counts


def _jpeg(image: np.ndarray, size: int) -> bytes:
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if resized.ndim == 3:
        resized = cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("JPEG encoding failed")
    return data.tobytes()


Origin = Callable[[np.ndarray], np.ndarray]


def export_asbench(
    pairs: Sequence[TreePair], out: str | Path, origin_of: Origin | None = None, size: int = 256
) -> dict[str, int]:
    """Write the ASBench image/augmented/mask layout (module docstring); returns how many origins came from the
    pairs' source photos and how many from ``origin_of`` (a generated RGB image -> the normal image to pair it with,
    e.g. the nearest one, which ``anodiff.cli.export`` builds from ``--normal-dir``)."""
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    root = Path(out) / pairs[0].category
    for sub in ("image", "augmented", "mask"):
        _fresh(root / sub)
    counts = {"from_source": 0, "from_normal": 0}
    for pair in pairs:
        image, photo = read_rgb(pair.image), source_photo(pair.image)
        if photo is None and origin_of is None:
            raise ValueError(
                f"{pair.image}: its sidecar names no source photo; give --normal-dir so the nearest "
                "normal image can be its origin"
            )
        origin = read_rgb(photo) if photo is not None else origin_of(image)
        counts["from_source" if photo is not None else "from_normal"] += 1
        mask = cv2.resize(read_mask(pair.mask).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        name = f"{_name(pair)}.jpg"
        write_atomic(root / "image" / name, _jpeg(origin, size))
        write_atomic(root / "augmented" / name, _jpeg(image, size))
        write_atomic(root / "mask" / name, _jpeg(((mask >= 0.5) * 255).astype(np.uint8), size))
    return counts


__all__ = ["JPEG_QUALITY", "TOOLS", "export_anomalib", "export_asbench", "normal_files"]
