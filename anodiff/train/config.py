"""``TrainConfig``: the settings of one ``anodiff train`` run (the trainer's input; the CLI builds it from flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..common.precision import check_precision
from ..data.fewshot import SPLIT_RULES
from ..model.config import PROMPT_ANOMALY, PROMPT_GLOBAL, DualConfig
from .session import SessionConfig


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults follow the authors (lr 2e-5 constant, batch 4, 5000 steps, rank 32)."""

    base: str = field(metadata={"help": "SD1.5: a diffusers folder or a .safetensors/.ckpt checkpoint."})
    data: str = field(
        metadata={"help": "An MVTec AD root (with category and anomaly) or a folder with images/ and masks/."}
    )
    output: str = field(metadata={"help": "Output folder: final .safetensors, checkpoints/, previews."})
    category: str | None = None
    anomaly: str | None = None
    name: str | None = field(
        default=None, metadata={"help": "File name of the final model (default <category>_<anomaly>)."}
    )
    steps: int = 5000
    batch_size: int = 4
    lr: float = 2e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    rank: int = 32
    text_rank: int = 32
    train_text_encoder: bool = True
    saim: bool = True
    saim_zero_init: bool = False
    bcm: bool = False
    resolution: int = 512
    flips: bool = True
    split: str = "floor"
    prompt_global: str = PROMPT_GLOBAL
    prompt_anomaly: str = PROMPT_ANOMALY
    seed: int = 32
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (accelerate)."})
    gradient_checkpointing: bool = False
    adam8bit: str = field(default="auto", metadata={"help": "auto (bitsandbytes on CUDA when installed), on, off."})
    cache_latents: bool = field(default=True, metadata={"help": "Encode each (image, flips) once, not every step."})
    checkpoint_every: int = 500
    preview_every: int = 500
    resume: bool = False
    resume_changed: bool = field(
        default=False,
        metadata={
            "help": "With resume: continue although settings such as "
            "lr, data or the process count changed (warned; no longer an exact continuation)."
        },
    )
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.split not in SPLIT_RULES:
            raise ValueError(f"split must be {' or '.join(map(repr, SPLIT_RULES))}, got {self.split!r}")
        check_precision(self.mixed_precision)
        for key in ("steps", "batch_size", "checkpoint_every", "preview_every", "resolution"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        parts = [p for p in (self.category, self.anomaly) if p]
        return "_".join(parts) or "dualanodiff"

    @property
    def session_config(self) -> SessionConfig:
        """The settings ``TrainingSession`` (init, step, resume) takes from this run."""
        names = {f.name for f in fields(SessionConfig)}
        return SessionConfig(**{k: v for k, v in asdict(self).items() if k in names})

    @property
    def dual_config(self) -> DualConfig:
        return DualConfig(
            rank=self.rank, saim=self.saim, saim_zero_init=self.saim_zero_init, bcm=self.bcm, text_rank=self.text_rank
        )
