"""Model configuration shared by the trainer, the diffusers pipeline and the ComfyUI nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

PROMPT_GLOBAL = "a vfx with sks"
PROMPT_ANOMALY = "sks"


@dataclass(frozen=True)
class DualConfig:
    """What a DualAnoDiff model contains (everything else is frozen SD1.5)."""

    rank: int = field(default=32, metadata={"help": "UNet LoRA rank per branch (official: 32)."})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; None means alpha = rank (scale 1)."})
    saim: bool = field(default=True, metadata={"help": "Cross-branch attention after every attention."})
    saim_zero_init: bool = field(
        default=False, metadata={"help": "Zero the SAIM out-linear so a fresh model equals SD1.5 (ours, not official)."}
    )
    bcm: bool = field(default=False, metadata={"help": "Background compensation on the 16 self-attentions."})
    text_rank: int = field(default=32, metadata={"help": "Text-encoder LoRA rank (shared by both prompts)."})
    text_alpha: float | None = field(default=None, metadata={"help": "Text-encoder LoRA alpha; None = rank."})

    def __post_init__(self) -> None:
        for name in ("rank", "text_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"DualConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def text_lora_alpha(self) -> float:
        return float(self.text_rank if self.text_alpha is None else self.text_alpha)
