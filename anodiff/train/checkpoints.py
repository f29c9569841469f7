"""The checkpoints of ``anodiff train`` as a record of one run: which step to resume, whether it belongs to this run.

A checkpoint is ``step-NNNNNN.safetensors`` (the model, in the weight-file schema) plus
``step-NNNNNN.state.safetensors`` (the optimiser state), whose metadata ``run`` holds the run's fingerprint: the
settings that must match for ``--resume`` to be an exact continuation (``steps`` is not one of them: continuing
to more steps is legitimate). A fresh run moves an earlier run's files aside, so ``--resume`` never continues
another run; ``check_same_run`` refuses a checkpoint whose fingerprint differs, naming each field.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from ..weights.load import load_dual
from ..weights.schema import DualFile, save_dual
from .config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^step-(\d+)\.safetensors$")
RUN_KEY = "run"
"""The state file's metadata key holding the run fingerprint (JSON)."""


def state_path(model: Path) -> Path:
    """``step-N.state.safetensors`` beside the checkpoint's model file ``step-N.safetensors``."""
    return model.with_suffix(".state.safetensors")


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """The newest step whose model and optimiser files both exist (an interrupted write leaves only temp files)."""
    found = []
    for path in folder.glob("step-*.safetensors"):
        m = CHECKPOINT.match(path.name)
        if m and state_path(path).is_file():
            found.append((int(m[1]), path))
    return max(found) if found else None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def run_fingerprint(config: TrainConfig, samples: Sequence, processes: int = 1) -> dict[str, str]:
    """What must match for an exact continuation; ``samples`` are the training pairs (their sorted image names
    identify the data, wherever the folder now lies), ``processes`` the data-parallel processes (the effective
    batch is ``batch_size`` x processes)."""
    c, dual = config, config.dual_config
    return {
        "seed": str(c.seed),
        "lr": repr(float(c.lr)),
        "rank": str(c.rank),
        "alpha": f"{dual.lora_alpha:g}",
        "bcm": _flag(c.bcm),
        "saim": _flag(c.saim),
        "text_encoder": _flag(c.train_text_encoder),
        "text_rank": str(c.text_rank) if c.train_text_encoder else "off",
        "resolution": str(c.resolution),
        "batch_size": str(c.batch_size),
        "processes": str(processes),
        "flips": _flag(c.flips),
        "weight_decay": repr(float(c.weight_decay)),
        "max_grad_norm": repr(float(c.max_grad_norm)),
        "mixed_precision": c.mixed_precision,
        "data": ",".join(sorted(Path(s.image).name for s in samples)),
        "prompt_global": c.prompt_global,
        "prompt_anomaly": c.prompt_anomaly,
    }


def fingerprint_of_model(meta: dict[str, str]) -> dict[str, str]:
    """The part of a fingerprint a checkpoint's model metadata gives (checkpoints written before ``run`` existed)."""
    text = meta.get("text_layers", "0") not in ("", "0")
    found = {
        "seed": meta.get("seed"),
        "rank": meta.get("rank"),
        "alpha": meta.get("alpha"),
        "bcm": meta.get("has_bcm"),
        "saim": meta.get("has_saim"),
        "text_encoder": _flag(text),
        "text_rank": meta.get("text_rank") if text else "off",
        "resolution": meta.get("resolution"),
        "prompt_global": meta.get("prompt_global"),
        "prompt_anomaly": meta.get("prompt_anomaly"),
    }
    return {k: v for k, v in found.items() if v is not None}


SHAPE = ("rank", "bcm", "saim", "text_encoder", "text_rank")
"""Fingerprint fields that decide the model's tensors: a checkpoint that differs in one of them cannot load."""


def check_same_run(
    state: Path,
    state_meta: dict[str, str],
    model_meta: dict[str, str],
    now: dict[str, str],
    allow_changed: bool = False,
) -> None:
    """Refuse (``ValueError`` naming ``state`` and every differing field, checkpoint vs now) to resume a checkpoint
    of another run: a different rank or text LoRA would not even load, other settings would silently give a
    different model than the one run ``--resume`` promises. ``allow_changed`` (``--resume-changed``) turns the
    latter into a warning, for a run that must go on with other settings (fewer GPUs after a failure)."""
    if RUN_KEY in state_meta:
        try:
            recorded = json.loads(state_meta[RUN_KEY])
        except ValueError:
            raise ValueError(f"{state}: metadata {RUN_KEY!r} is not the JSON run fingerprint anodiff writes") from None
    else:
        recorded = fingerprint_of_model(model_meta)
        unchecked = sorted(set(now) - set(recorded))
        log.warning("%s predates run fingerprints: cannot check %s against this run", state, ", ".join(unchecked))
    changed = [k for k in sorted(now) if k in recorded and str(recorded[k]) != now[k]]
    differ = "; ".join(f"{k} (checkpoint {recorded[k]!r}, now {now[k]!r})" for k in changed)
    if changed and allow_changed and not set(changed) & set(SHAPE):
        log.warning(
            "%s: resuming with changed settings (--resume-changed), not an exact continuation: %s", state, differ
        )
    elif changed:
        shape = set(changed) & set(SHAPE)
        raise ValueError(
            f"{state}: --resume would continue a different run; these settings differ: {differ}. "
            + (
                f"The model's shape differs ({', '.join(sorted(shape))}), so it cannot continue; "
                if shape
                else "Add --resume-changed to continue anyway (not an exact continuation), "
            )
            + "resume with the checkpoint's settings, or train afresh without --resume (this moves the old "
            "checkpoints aside)"
        )


def set_aside(folder: Path) -> Path | None:
    """Move an earlier run's files (checkpoints, optimiser states, previews, leftover temp files) from ``folder``
    into a new ``folder/previous-<time>`` so that ``--resume`` of the new run cannot pick them up; nothing is
    deleted. Returns that sub-folder, or None when there was nothing to move."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        return None
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    while True:
        aside = folder / (f"previous-{stamp}" + (f"-{n}" if n else ""))
        try:
            aside.mkdir()
            break
        except FileExistsError:
            n += 1
    for path in files:
        os.replace(path, aside / path.name)
    log.warning("fresh run (no --resume): moved %d file(s) of an earlier run from %s to %s", len(files), folder, aside)
    return aside


def write_checkpoint(
    path: Path, step: int, optimizer: dict[str, torch.Tensor], fingerprint: dict[str, str], model: DualFile | Path
) -> Path:
    """The optimiser state (with the run fingerprint in its metadata), then the model: ``model`` itself, or a
    model file of this step already written (the final one), linked rather than written again."""
    save_dual(state_path(path), optimizer, {"step": str(step), RUN_KEY: json.dumps(fingerprint, sort_keys=True)})
    if isinstance(model, DualFile):
        model.save(path)
    else:
        link_or_copy(model, path)
    log.info("checkpoint %s", path)
    return path


def read_checkpoint(
    path: Path, fingerprint: dict[str, str], allow_changed: bool = False
) -> tuple[DualFile, dict[str, torch.Tensor]]:
    """The model and optimiser state of checkpoint ``path``, once ``check_same_run`` has accepted it."""
    dual = load_dual(path)
    with safe_open(str(state_path(path)), "pt") as f:
        check_same_run(state_path(path), f.metadata() or {}, dual.metadata, fingerprint, allow_changed)
        names = f.keys()
        return dual, {k: f.get_tensor(k) for k in names}


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` holds ``source``'s bytes (a hard link where the file system has them), replaced atomically.
    A later atomic rewrite of ``source`` (``save_dual`` renames a new file over it) leaves ``target`` unchanged."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
