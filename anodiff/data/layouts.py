"""Dataset layouts ``--data`` can point at, told apart by their folders: MVTec AD / MPDD, BTAD, VisA, plain.

* MVTec AD and MPDD: ``<root>/<category>/test/<type>/*.png``, masks ``ground_truth/<type>/<stem>_mask.png``,
  normals ``train/good`` and ``test/good``.
* BTAD: the same tree with ``ok`` for ``good`` and masks named like their image (``ground_truth/ko/0000.png``);
  any mix of the two mask names and image extensions is accepted in either layout.
* VisA: ``<root>/<category>/Data/Images/{Anomaly,Normal}/*.JPG`` and ``Data/Masks/Anomaly/<stem>.png``, split by
  ``<root>/split_csv/1cls.csv`` (columns object, split, label, image, mask) when it is there. VisA has no anomaly-type
  folders, so a category has one type, ``anomaly``. Without the CSV, the last tenth of the sorted normals (at least
  one) is the test part of the normals and the rest the training part. Its masks are label maps (defect pixels 1, 2,
  ...), read with the ``nonzero`` rule of ``anodiff.common.mask_rule`` (every other layout: ``half``, > 127).
* Plain: ``<root>/images/*`` + ``<root>/masks/*`` sharing stems (one anomaly type, no category).

``detect_layout`` picks one and says which; a folder that is none of them gets a message naming the expected folders.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..common.imageio import DataError, images_in, is_image
from ..common.mask_rule import HALF, NONZERO
from .samples import GOOD, Sample, _plain_samples, _subdirs

VISA_TYPE = "anomaly"
VISA_CSV = Path("split_csv") / "1cls.csv"
MVTEC_CATEGORIES = frozenset(
    {
        "bottle",
        "cable",
        "capsule",
        "carpet",
        "grid",
        "hazelnut",
        "leather",
        "metal_nut",
        "pill",
        "screw",
        "tile",
        "toothbrush",
        "transistor",
        "wood",
        "zipper",
    }
)
MPDD_CATEGORIES = frozenset({"bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"})
NORMAL_NAMES = (GOOD, "ok")
EXPECTED = (
    "expected one of: <root>/images + <root>/masks (plain); <root>/<category>/test/<type> with "
    "<root>/<category>/ground_truth/<type> and train/good (MVTec AD, MPDD) or train/ok (BTAD); "
    f"<root>/{VISA_CSV.as_posix()} or <root>/<category>/Data/Images/Anomaly with Data/Masks/Anomaly (VisA)"
)


def _by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (the first by name when several extensions share one); {} if absent."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        if is_image(p):
            out.setdefault(p.stem, p)
    return out


class Layout:
    """One dataset root: its categories, anomaly types, (image, mask) samples and normal images."""

    name = "layout"
    title = "dataset"
    mask_rule = HALF
    """How its mask files binarise (``anodiff.common.mask_rule.rule_for`` tells it from a mask's path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def dataset(self) -> str:
        """The dataset whose published numbers apply (``metrics.published``), or a description when unknown."""
        return self.title

    def categories(self) -> list[str]:
        raise NotImplementedError

    def anomaly_types(self, category: str) -> list[str]:
        raise NotImplementedError

    def samples(self, category: str | None, anomaly: str | None) -> list[Sample]:
        raise NotImplementedError

    def normals(self, category: str, split: str = "train") -> list[Path]:
        raise NotImplementedError

    def jobs(self) -> list[tuple[str, str]]:
        """Every ``(category, anomaly type)``, sorted: one model each."""
        return [(c, a) for c in self.categories() for a in self.anomaly_types(c)]

    def describe(self) -> str:
        cats = self.categories()
        shown = ", ".join(cats[:6]) + (", ..." if len(cats) > 6 else "")
        return f"{self.title} layout at {self.root} ({len(cats)} categor{'y' if len(cats) == 1 else 'ies'}: {shown})"

    def _category(self, category: str | None, anomaly: str | None) -> None:
        if category is None or anomaly is None:
            raise ValueError(
                f"{self.root} holds {self.title} categories: pick a category and an anomaly type; "
                f"available categories: {', '.join(self.categories()) or 'none'}"
            )


class MVTecLayout(Layout):
    """MVTec AD, MPDD and BTAD: ``<category>/test/<type>`` with ``ground_truth/<type>`` (module docstring)."""

    name = "mvtec"

    @property
    def title(self) -> str:  # type: ignore[override]
        cats = set(self.categories())
        if cats and cats <= MVTEC_CATEGORIES:
            return "MVTec AD"
        if cats and cats <= MPDD_CATEGORIES:
            return "MPDD"
        if cats and all(self._normal_name(c) == "ok" for c in cats):
            return "BTAD"
        return "MVTec-style"

    def categories(self) -> list[str]:
        return [c for c in _subdirs(self.root) if (self.root / c / "test").is_dir()]

    def _normal_name(self, category: str) -> str:
        base = self.root / category
        for name in NORMAL_NAMES:
            if (base / "train" / name).is_dir() or (base / "test" / name).is_dir():
                return name
        return GOOD

    def anomaly_types(self, category: str) -> list[str]:
        return [k for k in _subdirs(self.root / category / "test") if k not in NORMAL_NAMES]

    def samples(self, category: str | None, anomaly: str | None) -> list[Sample]:
        self._category(category, anomaly)
        if not (self.root / category / "test").is_dir():
            raise FileNotFoundError(
                f"no category {category!r} in {self.root} (expected {self.root / category / 'test'})"
            )
        if anomaly in NORMAL_NAMES:
            raise ValueError(f"{anomaly!r} holds normal images without masks; pick an anomaly type of {category}")
        folder = self.root / category / "test" / anomaly
        if not folder.is_dir():
            kinds = ", ".join(self.anomaly_types(category))
            raise FileNotFoundError(f"no anomaly type {anomaly!r} in {folder.parent}; available: {kinds}")
        masks = self.root / category / "ground_truth" / anomaly
        by_stem = _by_stem(masks)
        out = []
        for image in images_in(folder):
            # MVTec's "<stem>_mask.png" first, then BTAD's "<stem>.<ext>"; a missing one is reported by validation
            mask = by_stem.get(f"{image.stem}_mask") or by_stem.get(image.stem) or masks / f"{image.stem}_mask.png"
            out.append(Sample(image, mask))
        return out

    def normals(self, category: str, split: str = "train") -> list[Path]:
        return images_in(self.root / category / split / self._normal_name(category))


class VisALayout(Layout):
    """VisA: ``<category>/Data/Images/Anomaly`` + ``Data/Masks/Anomaly``, split by ``split_csv/1cls.csv``."""

    name = "visa"
    title = "VisA"
    mask_rule = NONZERO

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.csv = root / VISA_CSV
        self._rows: list[dict[str, str]] | None = None

    def rows(self) -> list[dict[str, str]]:
        """The split CSV's rows, or [] without one; a CSV without VisA's columns is an error naming them."""
        if self._rows is None:
            self._rows = []
            if self.csv.is_file():
                with open(self.csv, newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh)
                    missing = {"object", "split", "label", "image", "mask"} - set(reader.fieldnames or ())
                    if missing:
                        raise DataError(
                            f"{self.csv}: no column {', '.join(sorted(missing))} (VisA's 1cls.csv has "
                            "object, split, label, image, mask)"
                        )
                    self._rows = [{k: (v or "").strip() for k, v in row.items()} for row in reader]
        return self._rows

    def categories(self) -> list[str]:
        if self.rows():
            return sorted({r["object"] for r in self.rows()})
        return [c for c in _subdirs(self.root) if (self.root / c / "Data" / "Images" / "Anomaly").is_dir()]

    def anomaly_types(self, category: str) -> list[str]:
        return [VISA_TYPE]

    def describe(self) -> str:
        split = f"split by {VISA_CSV.as_posix()}" if self.rows() else f"no {VISA_CSV.as_posix()}: folders only"
        return f"{super().describe()}, {split}, label masks (non-zero = defect)"

    def samples(self, category: str | None, anomaly: str | None) -> list[Sample]:
        self._category(category, anomaly)
        if category not in self.categories():
            raise FileNotFoundError(
                f"no VisA category {category!r} in {self.root}; available: {', '.join(self.categories())}"
            )
        if anomaly != VISA_TYPE:
            raise FileNotFoundError(
                f"VisA has no anomaly-type folders: use anomaly type {VISA_TYPE!r}, not {anomaly!r}"
            )
        if self.rows():
            chosen = [r for r in self.rows() if r["object"] == category and r["label"] == "anomaly"]
            out = [Sample(self.root / r["image"], self.root / r["mask"]) for r in chosen]
            if not out:
                raise DataError(f"{self.csv} lists no anomaly images of {category}")
            return sorted(out, key=lambda s: s.image.name)
        data = self.root / category / "Data"
        masks = data / "Masks" / "Anomaly"
        by_stem = _by_stem(masks)
        return [Sample(p, by_stem.get(p.stem, masks / f"{p.stem}.png")) for p in images_in(data / "Images" / "Anomaly")]

    def normals(self, category: str, split: str = "train") -> list[Path]:
        if self.rows():
            chosen = [
                r for r in self.rows() if r["object"] == category and r["label"] == "normal" and r["split"] == split
            ]
            if not chosen:
                raise FileNotFoundError(f"{self.csv} lists no {split} normal images of {category}")
            return sorted((self.root / r["image"] for r in chosen), key=lambda p: p.name)
        every = images_in(self.root / category / "Data" / "Images" / "Normal")
        held = max(1, len(every) // 10) if len(every) > 1 else 0
        return every[len(every) - held :] if split == "test" else every[: len(every) - held]


class PlainLayout(Layout):
    """``images/`` + ``masks/``: one set of pairs, no category, no normal images."""

    name = "plain"
    title = "plain images/ + masks/"

    def categories(self) -> list[str]:
        return []

    def jobs(self) -> list[tuple[str, str]]:
        raise ValueError(f"{self.root} is a plain images/ + masks/ folder: one model, so train it without --all")

    def describe(self) -> str:
        return f"{self.title} layout at {self.root}"

    def samples(self, category: str | None, anomaly: str | None) -> list[Sample]:
        if category is not None or anomaly is not None:
            raise ValueError(f"{self.root} is a plain images/ + masks/ folder; leave category and anomaly unset")
        return _plain_samples(self.root)

    def normals(self, category: str, split: str = "train") -> list[Path]:
        raise FileNotFoundError(f"{self.root} is a plain images/ + masks/ folder: it has no normal images")


def detect_layout(root: str | os.PathLike) -> Layout:
    """The layout of a dataset root, recognised by its folders (module docstring); a clear error otherwise."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if (root / "images").is_dir():
        return PlainLayout(root)
    subdirs = _subdirs(root)
    if (root / VISA_CSV).is_file() or any((root / c / "Data" / "Images" / "Anomaly").is_dir() for c in subdirs):
        return VisALayout(root)
    if any((root / c / "test").is_dir() for c in subdirs):
        return MVTecLayout(root)
    if (root / "test").is_dir() or (root / "Data" / "Images").is_dir():
        raise DataError(
            f"{root} looks like one category; give its parent folder as the dataset folder and {root.name!r} as the "
            "category"
        )
    found = "subfolders " + ", ".join(subdirs[:8]) if subdirs else "no subfolders"
    raise DataError(f"cannot read {root} as a dataset (it has {found}); {EXPECTED}")


__all__ = [
    "EXPECTED",
    "MPDD_CATEGORIES",
    "MVTEC_CATEGORIES",
    "VISA_TYPE",
    "Layout",
    "MVTecLayout",
    "PlainLayout",
    "VisALayout",
    "detect_layout",
]
