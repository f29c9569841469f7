"""Reading the two folder trees ``anodiff eval`` compares: a generated set and the real MVTec AD category.

Generated (as ``anodiff generate`` writes it), under ``<generated>/<category>/``: ``test/<anomaly>/NNN.png``,
``ground_truth/<anomaly>/NNN_mask.png`` and ``anomaly_part/<anomaly>/NNN.png``. Real: any layout of ``data.layouts``
(MVTec AD's ``<real>/<category>/test/<anomaly>`` with ``ground_truth/<anomaly>/<stem>_mask.png``, ``test/good`` and
``train/good``; MPDD, BTAD, VisA). The real anomalies are split as for
training (``anodiff.data.split_train``: the first floor(n/3) sorted files by default): the training part gives the
IC-LPIPS centres, the novelty reference and the localisation validation set; the rest is the test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..common.imageio import IMAGE_EXTENSIONS, DataError
from ..data.fewshot import find_samples, split_train
from ..data.layouts import detect_layout
from ..dataset.tree import index_of, read_pending, record_path, warn_pending


@dataclass(frozen=True)
class GeneratedPair:
    """One generated pair; ``part`` is None when the tree has no anomaly_part folder."""

    image: Path
    mask: Path
    part: Path | None


@dataclass
class RealSplit:
    """The real images of one anomaly type, split into the few-shot training part and the held-out test part."""

    train: list[tuple[Path, Path]] = field(default_factory=list)
    test: list[tuple[Path, Path]] = field(default_factory=list)


def _subdirs(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    )


def generated_folder(root: str | os.PathLike, category: str | None) -> tuple[Path, str]:
    """The category folder of a generated tree and its name; ``root`` may be the category folder itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"generated folder {root} does not exist; pass the --out of anodiff generate")
    if (root / "test").is_dir():
        return root, category or root.name
    categories = [c for c in _subdirs(root) if (root / c / "test").is_dir()]
    if category is None:
        if len(categories) != 1:
            raise ValueError(f"{root} holds categories {', '.join(categories) or 'none'}; choose one with --category")
        category = categories[0]
    if not (root / category / "test").is_dir():
        raise FileNotFoundError(f"no generated category {category!r} in {root} (expected {root / category / 'test'})")
    return root / category, category


def generated_pairs(folder: Path) -> dict[str, list[GeneratedPair]]:
    """Per anomaly type, the generated pairs sorted by name; an image without its mask is an error. Pairs that
    generate's record lists as pending (an interrupted run: their files may be from older settings) are left out,
    with a warning, as export and filter leave them out."""
    out: dict[str, list[GeneratedPair]] = {}
    for anomaly in _subdirs(folder / "test"):
        pairs, pending, skipped = [], read_pending(record_path(folder, anomaly)), 0
        for image in sorted((folder / "test" / anomaly).iterdir()):
            if image.name.startswith(".") or image.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if index_of(image.name) in pending:
                skipped += 1
                continue
            mask = folder / "ground_truth" / anomaly / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise FileNotFoundError(
                    f"generated image {image} has no mask {mask}; run anodiff generate again to complete it"
                )
            part = folder / "anomaly_part" / anomaly / f"{image.stem}.png"
            pairs.append(GeneratedPair(image, mask, part if part.is_file() else None))
        warn_pending(folder / "test" / anomaly, skipped, record_path(folder, anomaly))
        if pairs:
            out[anomaly] = pairs
    if not out:
        raise FileNotFoundError(f"{folder / 'test'} holds no generated images (expected test/<anomaly>/*.png)")
    return out


def real_split(root: str | os.PathLike, category: str, anomaly: str, rule: str = "floor") -> RealSplit:
    """The real pairs of one anomaly type, split as the generator's training used them."""
    samples = find_samples(root, category, anomaly)
    train = split_train(samples, rule)
    chosen = {s.image for s in train}
    pairs = [(s.image, s.mask) for s in sorted(samples, key=lambda s: s.image.name)]
    return RealSplit([p for p in pairs if p[0] in chosen], [p for p in pairs if p[0] not in chosen])


def real_normals(root: str | os.PathLike, category: str, split: str = "train") -> list[Path]:
    """The normal images of a real category, sorted: ``train/good`` or, with ``split="test"``, ``test/good``
    (or their equivalents in the detected layout, ``anodiff.data.layouts``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    try:
        return detect_layout(root).normals(category, split)
    except (FileNotFoundError, DataError) as err:
        raise FileNotFoundError(f"no normal {split} images of {category}: {err}") from err


__all__ = ["GeneratedPair", "RealSplit", "generated_folder", "generated_pairs", "real_normals", "real_split"]
