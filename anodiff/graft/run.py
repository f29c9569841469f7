"""``anodiff graft``: a synthetic MVTec-style anomaly set from one (or a few) real defects, without training.

The output tree, sidecars, settings record, resume and sharding are ``anodiff generate``'s (``generate.run``,
``generate.record``), so ``filter``, ``export`` and ``eval`` read it unchanged: ``test/<anomaly>/000.png`` the
image, ``ground_truth/<anomaly>/000_mask.png`` the mask (``inputs.tighten``), ``anomaly_part/<anomaly>/000.png``
the defect pixels on mid-grey. Pair ``i`` takes normal photo ``i % n`` and reference ``i % r`` (several
references rotate for diversity) and its target mask from ``targets.TargetMasks``; each defect is made in a crop
window at the working size and stitched back into the full-resolution photo (``regions.stitch``). Optimised
embeddings are kept in ``<out>/<category>/.anodiff-graft-embeddings/``, so a resumed run does not optimise again.

``GraftJob`` (picklable) holds everything a worker needs: ``job.sampler()`` loads the model once, then
``job.make_pair(sampler, i)`` returns pair ``i``'s files' contents and ``job.write_pair`` writes them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..common.imageio import read_image, read_mask
from ..common.pixels import unit_rgb
from ..generate.job import write_pair_files
from ..generate.options import check_name, resolve_dtype
from ..generate.record import open_record, parse_shard, shard_batches, update_pending
from ..generate.run import GenerateReport, pair_paths
from ..generate.sources import PhotoSource
from ..regions.stitch import BLENDS, crop, crop_window, region_box, stitch, stitch_mask
from .config import GraftSettings, prompts
from .inputs import TIGHTEN_THRESHOLD, GraftInputError, GraftInputs, check_mask
from .targets import TargetMasks


@dataclass
class GraftJob:
    """The settings of one ``anodiff graft`` run (plain values: pickles to Ray or multiprocessing workers)."""

    base: str
    references: list[tuple[str, str]]
    normal: str
    out: str
    count: int
    category: str = "object"
    anomaly: str = "defect"
    place: str = "random"
    masks: str | None = None
    seed: int = 0
    settings: GraftSettings = field(default_factory=GraftSettings)
    working: int = 512
    context: float = 2.0
    feather: int = 4
    blend: str = "feather"
    threshold: float | None = TIGHTEN_THRESHOLD
    region_size: tuple[float, float] = (0.05, 0.2)
    dtype: str = "fp32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_name(self.category, "category")
        check_name(self.anomaly, "anomaly")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"--count must be an integer >= 1, got {self.count!r}")
        if not self.references:
            raise ValueError("give at least one --reference IMAGE with its --reference-mask")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if self.working < 64 or self.working % 64:
            raise ValueError(f"--size must be a multiple of 64 pixels, got {self.working}")

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.category

    def record_settings(self) -> dict:
        """What the record compares on resume: everything that changes a pair."""
        values = asdict(self)
        for key in ("out", "count", "device"):
            values.pop(key)
        values["references"] = [[str(Path(i).resolve()), str(Path(m).resolve())] for i, m in self.references]
        values["normal"] = str(Path(self.normal).resolve())
        values["base"] = str(Path(self.base).resolve())
        values["masks"] = str(Path(self.masks).resolve()) if self.masks else None
        values["settings"]["cross_window"] = list(self.settings.cross_window)
        values["region_size"] = list(self.region_size)
        return {"version": 1, "mode": "graft", **values}

    def reference(self, pair: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(image, mask bool, file name) of the reference pair ``pair`` uses: ``i % r``."""
        image_file, mask_file = self.references[pair % len(self.references)]
        image = read_image(image_file)
        mask = check_mask(
            read_mask(mask_file), f"--reference-mask {mask_file}", image.shape, f"--reference {image_file}"
        )
        return image, mask, Path(image_file).name

    def sampler(self, progress: bool = False):
        """The model, loaded once per worker."""
        from ..common.precision import torch_dtype
        from ..sd15.load import load_sd15
        from .embedding import EmbeddingBank
        from .sampler import GraftSampler

        base = load_sd15(self.base, dtype=torch_dtype(self.dtype))
        for module in (base.unet, base.vae, base.text_encoder):
            module.to(self.device)
        bank = EmbeddingBank(self.folder / ".anodiff-graft-embeddings")
        return GraftSampler(base, self.settings, bank, progress=progress)

    def make_pair(self, sampler, pair: int, source: PhotoSource, targets: TargetMasks) -> dict:
        """Pair ``pair``: full-size image, mask and part, and its sidecar record. Raises before anything is written."""
        reference, ref_mask, ref_name = self.reference(pair)
        photo = source.photo(pair)
        target = targets(pair, ref_mask)
        ref_window = crop_window(ref_mask, self.context, self.working)
        ref_crop, ref_mask_crop = crop(reference, ref_mask, ref_window)
        window = crop_window(target, self.context, self.working)
        photo_crop, target_crop = crop(photo, target, window)
        inputs = GraftInputs.checked(ref_crop, ref_mask_crop, photo_crop, target_crop, size=window.work_shape)
        result = sampler(inputs, self.category, self.anomaly, self.seed, self.threshold, self.feather)
        image = stitch(photo, result.image, target, window, feather=self.feather, blend=self.blend)[0]
        mask = stitch_mask(result.mask, target, window)
        part = np.where(mask[..., None], unit_rgb(image), np.float32(0.5)).astype(np.float32)  # photo: its own pixels
        meta = {
            "model": "graft",
            "mode": "graft",
            "base": str(Path(self.base).resolve()),
            "anomaly": self.anomaly,
            "prompts": list(prompts(self.category, self.anomaly)),
            "steps": self.settings.steps,
            "cfg": self.settings.cfg,
            "sampler": "ddim",
            "dtype": self.dtype,
            "pair": pair,
            "seed": self.seed + pair,
            "reference": ref_name,
            "source": source.name_for(pair),
            "source_root": str(source.root.resolve()),
            "size": [int(photo.shape[1]), int(photo.shape[0])],
            "defects": [
                {
                    "id": 1,
                    "seed": self.seed + pair,
                    "box": list(region_box(target)),
                    "window": window.to_dict(),
                    "mask_pixels": int(mask.sum()),
                }
            ],
            "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        }
        return {"image": image, "mask": mask, "part": part, "meta": meta}

    def write_pair(self, pair: int, made: dict) -> bool:
        """Sidecar, then the three PNGs, each atomic (generate's writer); True when the mask is empty."""
        return write_pair_files(
            self.folder, self.anomaly, pair, made["image"], made["part"], made["mask"], made["meta"]
        )


def todo_pairs(job: GraftJob, shard: tuple[int, int], force: bool) -> tuple[Path, dict, list[int], GenerateReport]:
    """The record (created or checked) and the pairs this shard still owes, as ``generate`` decides them."""
    settings = job.record_settings()
    record, owed = open_record(job.folder, job.anomaly, settings, force)
    report = GenerateReport(job.folder)
    mine = {i for batch in shard_batches(list(range(job.count)) + sorted(owed), 1, shard) for i in batch}
    todo = []
    for i in sorted(mine):
        present = sum(p.is_file() for p in pair_paths(job.folder, job.anomaly, i))
        if present == 3 and not force and i not in owed:
            report.skipped += 1
            continue
        report.redone += int(bool(present) and not force)
        todo.append(i)
    if todo:
        update_pending(record, settings, add=set(todo))
    return record, settings, todo, report


def graft(
    job: GraftJob,
    shard: str | tuple[int, int] | None = None,
    force: bool = False,
    progress: bool = True,
    runner=None,
) -> GenerateReport:
    """Make pairs ``0 .. count-1`` of ``job`` (this shard's), skipping complete ones; a failed pair leaves no file
    and stays pending in the record. ``runner(job, todo, record, settings, report)`` makes them instead, e.g.
    ``anodiff.scale.graft.graft_runner(ray_runner(...))`` on Ray (this module never imports ``scale``)."""
    shard = parse_shard(shard)
    source = PhotoSource(job.normal)
    targets = TargetMasks(job.place, source, job.masks, job.seed, job.region_size, job.feather)
    for k in range(len(job.references)):
        job.reference(k)  # every reference checked before the model loads
    record, settings, todo, report = todo_pairs(job, shard, force)
    if not todo:
        return report
    if runner is not None:
        return runner(job, todo, record, settings, report)
    sampler = job.sampler(progress=progress)
    for i in tqdm(todo, desc=f"graft {job.category}/{job.anomaly}", unit="pair", disable=not progress):
        made = job.make_pair(sampler, i, source, targets)
        report.empty_masks += int(job.write_pair(i, made))
        report.written += 1
        report.indices.append(i)
        update_pending(record, settings, done={i})
    return report


def default_device() -> str:
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


__all__ = ["GraftInputError", "GraftJob", "default_device", "graft", "resolve_dtype", "todo_pairs"]
