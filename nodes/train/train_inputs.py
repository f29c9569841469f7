"""Train Dual LoRA's inputs that could disagree, made explicit: where training starts from (``resume`` or
``resume_file``, never both) and who owns the training size (Load Defect Set's and this node's resolution agree)."""

from __future__ import annotations

import torch

from ...anodiff.train.session import TrainedDual
from .train_save import NONE, load_trained

NODE = "Train Dual LoRA"
RESOLUTION = "_anodiff_resolution"  # attribute of an IMAGE tensor: the resolution Load Defect Set resized it to


def starting_point(resume: TrainedDual | None, resume_file: str) -> TrainedDual | None:
    """The weights to continue: ``resume`` (connected) or ``resume_file`` (picked); both at once is an error."""
    picked = bool(resume_file) and resume_file != NONE
    if resume is not None and picked:
        raise ValueError(
            f"{NODE}: both 'resume' (connected) and 'resume_file' ({resume_file}) are set; continue one of them: "
            "disconnect 'resume', or set 'resume_file' to none"
        )
    return resume if resume is not None else load_trained(resume_file)


def mark_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Load Defect Set's photos remember the size it gave them (an attribute of that very tensor: a node that
    changes the photos returns a new tensor without it)."""
    setattr(images, RESOLUTION, int(resolution))
    return images


def check_resolution(images: torch.Tensor, resolution: int) -> None:
    """Photos Load Defect Set sized to another resolution would be stretched a second time: the two widgets
    must agree. Photos from any other node are resized once, here."""
    made = getattr(images, RESOLUTION, None)
    if made is not None and made != resolution:
        raise ValueError(
            f"{NODE}: resolution is {resolution} but Load Defect Set made the photos at resolution {made}; set both "
            f"to the same size (e.g. resolution here to {made}), so the photos are resized once"
        )
