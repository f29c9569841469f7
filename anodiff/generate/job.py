"""One ``anodiff generate`` call once its checks are done: the pairs still to make and how to make and write them.

``generate`` decides everything on the driver (settings, record, the pairs owed) and hands a ``GenerateJob`` to a
runner: ``run_local`` (one process, a thread pool writing while the next batch samples) or
``anodiff.scale.generate.run_on_ray`` (sampling actors, writing workers). Both call the same three steps, so the
files are the same bytes whichever runs them:

- ``PipelineFactory()`` builds the dual pipelines once per process (picklable: it is what a Ray actor receives);
- ``job.sample(pipes, group, saliency)`` samples one fixed batch of pairs into items (plain pairs or region works);
- ``job.write(item, saliency)`` extracts the mask and writes the sidecar and PNGs of one pair (each file atomic).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..common.imageio import write_png
from ..data.masks import extract_mask
from ..dataset.sidecar import label_path, sidecar_path, write_label, write_sidecar
from .plan import PairWork, RegionPlan, sample_group, size_of, write_region_pair
from .provenance import background_record
from .record import shard_batches, update_pending


@dataclass
class GenerateReport:
    """What one ``generate`` call did; ``written``/``skipped``/``redone`` count pairs."""

    folder: Path
    written: int = 0
    skipped: int = 0
    redone: int = 0
    empty_masks: int = 0
    indices: list[int] = field(default_factory=list)


def pair_paths(folder: Path, anomaly: str, index: int) -> tuple[Path, Path, Path]:
    """(whole image, mask, anomaly part) of pair ``index`` under ``<out>/<category>``."""
    name = f"{index:03d}"
    return (
        folder / "test" / anomaly / f"{name}.png",
        folder / "ground_truth" / anomaly / f"{name}_mask.png",
        folder / "anomaly_part" / anomaly / f"{name}.png",
    )


@dataclass(frozen=True)
class PipelineFactory:
    """Builds the dual pipelines (one per weight file) on the process that samples: SD1.5 from ``base`` in
    ``dtype``, on ``device``. Picklable, so a Ray actor builds its own copy once."""

    base: Path
    weights: tuple[Path, ...]
    device: str
    dtype: str

    def __call__(self) -> list[Any]:
        from ..common.precision import torch_dtype
        from ..sd15.load import load_sd15
        from ..sd15.pipeline import DualAnoDiffPipeline
        from ..weights.load import load_dual

        duals = [load_dual(w) for w in self.weights]
        return [
            DualAnoDiffPipeline.from_sd15(load_sd15(self.base, dtype=torch_dtype(self.dtype)), d, device=self.device)
            for d in duals
        ]


@dataclass
class GenerateJob:
    """The pairs ``todo`` of one category/anomaly and everything needed to sample and write them (picklable:
    the saliency model and the decoded backgrounds are made per process)."""

    folder: Path
    anomaly: str
    category: str
    record: Path
    settings: dict
    todo: list[int]
    batch_size: int
    shard: tuple[int, int]
    factory: PipelineFactory
    seed: int
    steps: int
    cfg: float
    scheduler: str
    size: int
    mask_method: str
    threshold: float
    plan: RegionPlan | None
    background_files: list[Path] | None
    background_every: int
    meta: dict
    _backgrounds: Any = field(default=None, repr=False, compare=False)
    _groups: dict[int, list[int]] | None = field(default=None, repr=False, compare=False)

    @property
    def needs_saliency(self) -> bool:
        return self.mask_method == "u2netp" or bool(self.background_files)

    def batches(self) -> list[list[int]]:
        """The fixed batches of this shard: pair i lies in batch i // batch_size (``shard_batches``)."""
        return shard_batches(self.todo, self.batch_size, self.shard)

    def load_saliency(self) -> Any:
        """U²-Net-P when masks or BCM backgrounds need it (one per process), else None."""
        from ..data.masks import U2NetP

        return U2NetP() if self.needs_saliency else None

    def sample(self, pipes: list[Any], group: list[int], saliency: Any = None) -> list[Any]:
        """The items of one batch: ``PairWork`` with region control, else ``(pair, image, anomaly part)``."""
        if self.background_files and self._backgrounds is None:
            from .backgrounds import Backgrounds

            self._backgrounds = Backgrounds(self.background_files, self.size, self.background_every, saliency)
        if self.plan is not None:
            if saliency is not None:
                self.plan.source.saliency = saliency
            windowed = self._backgrounds.for_window if self._backgrounds is not None else None
            return sample_group(
                pipes,
                self.plan,
                group,
                self.seed,
                steps=self.steps,
                cfg=self.cfg,
                scheduler=self.scheduler,
                background_for=windowed,
            )
        background_for = self._backgrounds.for_pair if self._backgrounds is not None else None
        batch = pipes[0](
            len(group),
            self.size,
            self.size,
            steps=self.steps,
            cfg=self.cfg,
            scheduler=self.scheduler,
            seed=[self.seed + i for i in group],
            progress=False,
            backgrounds=[background_for(i) for i in group] if background_for else None,
        )
        return list(zip(group, batch.images, batch.anomaly_parts))

    @staticmethod
    def pair_of(item: Any) -> int:
        return item.pair if isinstance(item, PairWork) else int(item[0])

    def group_of(self, pair: int) -> list[int]:
        """The pairs sampled in one batch with ``pair`` (the sidecar records them: a replay samples them again)."""
        if self._groups is None:
            self._groups = {i: group for group in self.batches() for i in group}
        return self._groups[pair]

    def write(self, item: Any, saliency: Any = None) -> bool:
        """Mask, sidecar and PNGs of one sampled pair; True when its mask is empty."""
        i = self.pair_of(item)
        meta = {**self.meta, "pair": i, "seed": self.seed + i, "group": self.group_of(i)}
        files, every = self.background_files, self.background_every
        if isinstance(item, PairWork):
            meta["background"] = background_record(files, every, i, size_of(item.image))
            return write_region_pair(
                pair_paths(self.folder, self.anomaly, i),
                label_path(self.folder, self.anomaly, i),
                sidecar_path(self.folder, self.anomaly, i),
                item,
                self.plan,
                self.mask_method,
                self.threshold,
                saliency,
                meta,
            )
        _, image, part = item
        meta.update(source=None, size=[self.size, self.size])
        meta["background"] = background_record(files, every, i, [self.size, self.size])
        return _write_pair(self.folder, self.anomaly, i, image, part, self.mask_method, self.threshold, saliency, meta)

    def done(self, indices: list[int]) -> None:
        """Take finished pairs off the record's pending list (only once every file of theirs is on disk)."""
        update_pending(self.record, self.settings, done=set(indices))


def run_local(job: GenerateJob, report: GenerateReport, progress: bool = True, workers: int = 2) -> GenerateReport:
    """One process: the pipelines sample batch b while a thread pool writes batch b - 1."""
    saliency = job.load_saliency()
    pipes = job.factory()

    def finish(indices: list[int], futures: list[Future]) -> None:
        for i, pending in zip(indices, futures):
            report.written += 1
            report.empty_masks += int(pending.result())
            report.indices.append(i)
        job.done(indices)
        bar.update(len(indices))

    with (
        tqdm(total=len(job.todo), desc=f"{job.category}/{job.anomaly}", unit="pair", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="anodiff-write") as pool,
    ):
        writing: deque[tuple[list[int], list[Future]]] = deque()
        for group in job.batches():
            items = job.sample(pipes, group, saliency)
            writing.append(([job.pair_of(w) for w in items], [pool.submit(job.write, w, saliency) for w in items]))
            while len(writing) > 1:  # the pipelines sample batch b while batch b - 1 is written
                finish(*writing.popleft())
        while writing:
            finish(*writing.popleft())
    return report


def _write_pair(folder, anomaly, i, image, part, mask_method, threshold, u2net, meta) -> bool:
    """Pair ``i``'s mask from its anomaly part, then its files (``write_pair_files``, on a worker thread)."""
    return write_pair_files(
        folder, anomaly, i, image, part, extract_mask(part, mask_method, threshold, model=u2net), meta
    )


def write_pair_files(folder: Path, anomaly: str, i: int, image, part, mask: np.ndarray, meta: dict) -> bool:
    """The sidecar, then the image, anomaly part and mask PNGs of pair ``i`` (each atomic), after removing a label
    mask an earlier multi-defect run left (export would take it for this pair's defects); True when the mask is
    empty. Generate's and the graft mode's pairs are written by this."""
    write_sidecar(sidecar_path(folder, anomaly, i), meta)
    write_label(label_path(folder, anomaly, i), None)
    image_path, mask_path, part_path = pair_paths(folder, anomaly, i)
    write_png(image_path, image)
    write_png(part_path, part)
    write_png(mask_path, mask.astype(np.uint8) * 255)
    return not mask.any()
