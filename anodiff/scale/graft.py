"""``anodiff graft --ray``: the training-free mode on the same Ray runner as ``generate --ray``.

``RayGraftJob`` gives a ``GraftJob`` the steps ``anodiff.scale.generate.run_on_ray`` calls: one pair per batch (the
graft samples one image at a time), ``factory`` loads the frozen SD1.5 and its embedding cache once per actor,
``sample`` makes a pair's image and mask in memory, ``write`` stores its files (each atomic) on a writer actor and
``done`` takes it off the record's pending list on the driver. Pair ``i`` uses the photo, reference, target and
seed it uses in one process, so the files are those of ``anodiff graft`` without ``--ray``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..generate.record import update_pending
from ..graft.run import GraftJob


@dataclass
class RayGraftJob:
    """The pairs ``todo`` of ``job`` in the runner's terms (picklable; photo and target readers per process)."""

    job: GraftJob
    todo: list[int]
    record: Path
    settings: dict
    needs_saliency: bool = False
    _io: Any = field(default=None, repr=False, compare=False)

    def batches(self) -> list[list[int]]:
        return [[i] for i in self.todo]

    def factory(self) -> Any:
        return self.job.sampler(progress=False)

    def load_saliency(self) -> None:
        return None

    def sample(self, sampler: Any, group: list[int], saliency: Any = None) -> list[tuple[int, dict]]:
        from ..generate.sources import PhotoSource
        from ..graft.targets import TargetMasks

        if self._io is None:
            job = self.job
            source = PhotoSource(job.normal)
            self._io = source, TargetMasks(job.place, source, job.masks, job.seed, job.region_size, job.feather)
        return [(i, self.job.make_pair(sampler, i, *self._io)) for i in group]

    @staticmethod
    def pair_of(item: tuple[int, dict]) -> int:
        return int(item[0])

    def write(self, item: tuple[int, dict], saliency: Any = None) -> bool:
        return self.job.write_pair(item[0], item[1])

    def done(self, indices: list[int]) -> None:
        update_pending(self.record, self.settings, done=set(indices))


def graft_runner(runner: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """``anodiff.graft.run.graft``'s ``runner`` from a generate runner (``scale.generate.ray_runner``): the pairs
    still owed wrapped as a ``RayGraftJob``."""

    def run(job: GraftJob, todo: list[int], record: Path, settings: dict, report: Any) -> Any:
        return runner(RayGraftJob(job, todo, record, settings), report)

    return run


__all__ = ["RayGraftJob", "graft_runner"]
