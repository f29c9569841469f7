"""``generate()``'s arguments as one value, and what is worked out from them before any pair is made: every
argument checked, the device and dtype chosen, the weight files loaded, the normal images listed and the region
plan made (so a bad argument fails before a model loads)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..regions.stitch import BLENDS
from ..weights.load import load_dual
from ..weights.schema import DualFile
from .backgrounds import check_backgrounds, normal_images
from .options import BCM_DEFAULTS, DUAL_DEFAULTS, check_args, check_name, resolve_dtype
from .plan import RegionPlan, check_models, make_plan
from .record import parse_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateRequest:
    """The arguments of ``anodiff.generate.run.generate``, as given (see there)."""

    base_path: str | os.PathLike
    weights_path: str | os.PathLike | Sequence[str | os.PathLike]
    out_dir: str | os.PathLike
    count: int
    category: str
    anomaly: str
    batch_size: int
    seed: int
    steps: int | None
    cfg: float | None
    scheduler: str
    size: int
    mask_method: str
    threshold: float
    normal_dir: str | os.PathLike | None
    background_every: int
    force: bool
    device: str | None
    progress: bool
    source: str | os.PathLike | None
    region: str | os.PathLike | None
    feather: int
    region_size: tuple[float, float]
    dtype: str
    shard: str | tuple[int, int] | None
    workers: int
    context: float
    working: int | None
    defects: int
    blend: str
    region_ids: bool
    runner: Callable | None


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` worked out: defaults filled in, files loaded, the region plan made."""

    shard: tuple[int, int]
    device: str
    dtype_name: str
    folder: Path
    base_path: Path
    several: list[Path]
    dual: DualFile
    more: list[DualFile]
    files: list[Path] | None
    working: int
    plan: RegionPlan | None
    steps: int
    cfg: float


def default_device() -> str:
    """This process's GPU (``LOCAL_RANK`` under torchrun/accelerate), else the CPU."""
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local}" if torch.cuda.is_available() else "cpu"


def _backgrounds(r: GenerateRequest, dual: DualFile, weights_path: Path) -> list[Path] | None:
    """The normal images for BCM, checked against the model (BCM trained or not) and the pairs that need them."""
    if r.normal_dir is not None:
        if not dual.config.bcm:
            raise ValueError(f"normal_dir given, but {weights_path} was trained without BCM; drop --normal-dir")
        files = normal_images(Path(r.normal_dir), r.category)
        check_backgrounds(files, range(r.count), r.background_every)
        return files
    if dual.config.bcm:
        log.warning("%s has BCM but no normal_dir was given: generating without background compensation", weights_path)
    return None


def prepare(r: GenerateRequest) -> Prepared:
    """Check every argument and load what the run needs, in the order the errors are reported."""
    check_args(
        r.count,
        r.batch_size,
        r.size,
        r.scheduler,
        r.mask_method,
        r.threshold,
        r.background_every,
        context=r.context,
        working=r.working,
        region_size=r.region_size,
    )
    shard = parse_shard(r.shard)
    device = default_device() if r.device is None else r.device
    dtype_name = resolve_dtype(r.dtype, device)
    folder = Path(r.out_dir) / check_name(r.category, "category")
    check_name(r.anomaly, "anomaly")
    weights = r.weights_path
    several = [Path(w) for w in weights] if isinstance(weights, (list, tuple)) else [Path(weights)]
    base_path = Path(r.base_path)
    if not base_path.exists():
        raise FileNotFoundError(f"base model not found: {base_path}")
    dual = load_dual(several[0])
    more = [load_dual(w) for w in several[1:]]  # a defect type per model: defect k uses model k % n
    files = _backgrounds(r, dual, several[0])
    if r.blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {r.blend!r}")
    working = r.size if r.working is None else r.working
    plan = make_plan(
        r.source, r.region, r.seed, r.region_size, r.context, working, r.feather, r.blend, r.defects, r.region_ids
    )
    if more:
        check_models(several, [dual, *more], plan, files is not None)
    default_steps, default_cfg = BCM_DEFAULTS if files else DUAL_DEFAULTS
    steps = default_steps if r.steps is None else r.steps
    cfg = default_cfg if r.cfg is None else float(r.cfg)
    return Prepared(shard, device, dtype_name, folder, base_path, several, dual, more, files, working, plan, steps, cfg)
