"""``anodiff generate --from-sidecar FILE``: one pair made again from its sidecar, byte-identical on the same machine.

The files the pair came from are checked against the sha256s its sidecar records (base model, weight files,
U²-Net-P, photo, BCM background) before anything loads. The pair is then sampled again in the UNet batch it was
made in (its ``group``): the pairs of a batch share convolution and matmul calls, whose last bits depend on the
batch, so each batch mate is rebuilt from its own sidecar beside FILE (regions from their recorded shapes, not from
``--region``). A mate whose sidecar is missing or was rewritten by another run is left out with a warning; the pair
then matches the original only to rounding. The pair's files, sidecar included, are written under ``out``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.masks import U2NetP
from ..dataset.sidecar import label_path, read_sidecar, sidecar_path
from .backgrounds import Backgrounds
from .options import check_name
from .plan import RegionPlan, sample_group, write_region_pair
from .provenance import RUN_KEYS, model_sha256, region_of

log = logging.getLogger(__name__)
REQUIRED = ("pair", "seed", "size", "source", "background", *RUN_KEYS)


def read_replayable(path: Path) -> dict[str, Any]:
    """The sidecar, refused (naming what it lacks) when written before sidecars recorded enough to regenerate."""
    meta = read_sidecar(path)
    if meta is None:
        raise FileNotFoundError(f"--from-sidecar: {path} not found; give a meta/<anomaly>/NNN.json of a generated set")
    regions = ("source_root", "source_sha256", "defects") if meta.get("source") is not None else ()
    missing = [k for k in (*REQUIRED, *regions) if k not in meta]
    if missing:
        raise ValueError(
            f"{path}: written before sidecars recorded what regenerates a pair (no {', '.join(missing)}); "
            "make the pair again with anodiff generate --force"
        )
    return meta


def check_file(path: str | os.PathLike, expected: str, what: str) -> None:
    """``path`` must still hold what the pair was made from."""
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{what} {path} not found (the sidecar records sha256 {expected[:16]}...); "
            "restore it, or pass where it is now"
        )
    actual = model_sha256(path)
    if actual != expected:
        raise ValueError(
            f"{what} {path} changed since the pair was made: sha256 {actual[:16]}..., the sidecar "
            f"records {expected[:16]}...; pass the original file"
        )


def batch_mates(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The sidecars of the pairs sampled with this one, in batch order (this one included)."""
    mates = []
    for j in meta["group"]:
        other = path.with_name(f"{int(j):03d}.json")
        try:
            mate = meta if j == meta["pair"] else read_sidecar(other)
        except ValueError:
            mate = None
        if mate is None or any(mate.get(k) != meta.get(k) for k in RUN_KEYS):
            log.warning(
                "%s: pair %d was sampled with this one, but its sidecar %s is missing or from another run; "
                "sampling without it, so the pair may differ from the original by rounding",
                path,
                j,
                other,
            )
            continue
        mates.append(mate)
    return mates


class RecordedPhotos:
    """``PhotoSource``'s face for the recorded photos of the batch mates (checked against their sha256)."""

    def __init__(self, mates: list[dict[str, Any]]) -> None:
        self.root = Path(mates[0]["source_root"])
        self.files = {m["pair"]: Path(m["source_root"]) / m["source"] for m in mates}
        self.names = {m["pair"]: m["source"] for m in mates}
        for m in mates:
            check_file(self.files[m["pair"]], m["source_sha256"], f"pair {m['pair']}'s photo")

    def file_for(self, pair: int) -> Path:
        return self.files[pair]

    def name_for(self, pair: int) -> str:
        return self.names[pair]

    def photo(self, pair: int) -> np.ndarray:
        from ..common.imageio import read_image

        return read_image(self.files[pair])


@dataclass
class RecordedPlan(RegionPlan):
    """A ``RegionPlan`` whose regions are the recorded shapes."""

    recorded: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def regions_for(self, pair: int) -> list[np.ndarray]:
        return self.recorded[pair]


class RecordedBackgrounds(Backgrounds):
    """``Backgrounds`` over each mate's recorded normal image (checked against its sha256)."""

    def __init__(self, mates: list[dict[str, Any]], size: int, saliency: Any) -> None:
        files = list(dict.fromkeys(m["background"]["file"] for m in mates))
        for m in mates:
            check_file(m["background"]["file"], m["background"]["sha256"], f"pair {m['pair']}'s BCM background")
        super().__init__([Path(f) for f in files], size, 1, saliency)
        self._index = {m["pair"]: files.index(m["background"]["file"]) for m in mates}

    def index_of(self, pair: int) -> int:
        return self._index[pair]


def _plan(meta: dict[str, Any], mates: list[dict[str, Any]]) -> RecordedPlan:
    regions = {
        m["pair"]: [region_of(d["region"], f"pair {m['pair']} defect {d['id']}") for d in m["defects"]] for m in mates
    }
    plan = RecordedPlan(
        RecordedPhotos(mates),
        None,
        len(meta["defects"]),
        meta["run_seed"],
        (0.0, 0.0),
        meta["context"],
        meta["working"],
        meta["feather"],
        meta["blend"],
        recorded=regions,
    )
    if len(meta["weights_files"]) > 1:  # as generate's check_models
        plan.models, plan.types = list(meta["weights_files"]), [Path(f).stem for f in meta["weights_files"]]
    return plan


def _checked_models(
    path: Path, meta: dict[str, Any], base: str | os.PathLike | None, weights: list[str | os.PathLike] | None
) -> tuple[Path, list[Path]]:
    """The base model and weight files (where they are now, or as recorded), checked against the recorded sha256."""
    hashes = meta["hashes"]
    base_path = Path(base if base is not None else meta["base"])
    weight_paths = [Path(w) for w in (weights or meta["weights_files"])]
    if len(weight_paths) != len(hashes["weights"]):
        raise ValueError(f"{path} records {len(hashes['weights'])} weight file(s), got {len(weight_paths)}")
    check_file(base_path, hashes["base"], "base model")
    for w, digest in zip(weight_paths, hashes["weights"]):
        check_file(w, digest, "weights")
    return base_path, weight_paths


def _checked_saliency(meta: dict[str, Any]) -> U2NetP | None:
    """U²-Net-P when the pair's mask or background needs it; its file checked when its sha256 was recorded."""
    u2net = U2NetP() if meta["mask_method"] == "u2netp" or meta["background"] else None
    if meta["hashes"].get("u2netp"):
        from ..common.assets import u2netp_path

        check_file(u2netp_path(), meta["hashes"]["u2netp"], "U²-Net-P")
    return u2net


def regenerate(
    sidecar: str | os.PathLike,
    out_dir: str | os.PathLike,
    base: str | os.PathLike | None = None,
    weights: list[str | os.PathLike] | None = None,
    device: str | None = None,
) -> Path:
    """Make the pair of ``sidecar`` again under ``out_dir/<category>`` (module docstring); returns its image.
    base/weights: where the model files are now, when they moved (checked against the recorded sha256)."""
    import torch

    from ..common.precision import torch_dtype
    from ..sd15.load import load_sd15
    from ..sd15.pipeline import DualAnoDiffPipeline
    from ..weights.load import load_dual
    from .job import _write_pair, pair_paths

    path = Path(sidecar)
    meta = read_replayable(path)
    base_path, weight_paths = _checked_models(path, meta, base, weights)
    mates = batch_mates(path, meta)
    folder = Path(out_dir) / check_name(meta["category"], "category")
    anomaly, pair = check_name(meta["anomaly"], "anomaly"), meta["pair"]
    u2net = _checked_saliency(meta)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipes = [
        DualAnoDiffPipeline.from_sd15(
            load_sd15(base_path, dtype=torch_dtype(meta["dtype"])), load_dual(w), device=device
        )
        for w in weight_paths
    ]
    backgrounds = RecordedBackgrounds(mates, meta["size"][0], u2net) if meta["background"] else None
    sampling = {"steps": meta["steps"], "cfg": meta["cfg"], "scheduler": meta["sampler"]}
    record = {k: v for k, v in meta.items() if k != "version"}
    pairs = [m["pair"] for m in mates]
    if meta["source"] is not None:
        plan = _plan(meta, mates)
        works = sample_group(
            pipes,
            plan,
            pairs,
            meta["run_seed"],
            **sampling,
            background_for=backgrounds.for_window if backgrounds else None,
        )
        write_region_pair(
            pair_paths(folder, anomaly, pair),
            label_path(folder, anomaly, pair),
            sidecar_path(folder, anomaly, pair),
            works[pairs.index(pair)],
            plan,
            meta["mask_method"],
            meta["threshold"],
            u2net,
            record,
        )
    else:
        size = meta["size"][0]
        batch = pipes[0](
            len(pairs),
            size,
            size,
            **sampling,
            seed=[meta["run_seed"] + j for j in pairs],
            backgrounds=[backgrounds.for_pair(j) for j in pairs] if backgrounds else None,
            progress=False,
        )
        k = pairs.index(pair)
        _write_pair(
            folder,
            anomaly,
            pair,
            batch.images[k],
            batch.anomaly_parts[k],
            meta["mask_method"],
            meta["threshold"],
            u2net,
            record,
        )
    return pair_paths(folder, anomaly, pair)[0]


__all__ = ["RecordedBackgrounds", "RecordedPhotos", "RecordedPlan", "batch_mates", "read_replayable", "regenerate"]
