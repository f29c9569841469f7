"""The graft mode's settings, with O2MAG's defaults (one-shot-reference.md; ``echrao/O2MAG`` ``triag/mca_p2p.py``,
``triag/prompt_optimize.py``)."""

from __future__ import annotations

from dataclasses import dataclass

NEGATIVE = (
    "intact shell, smooth surface, pristine, flawless, clean, no crack, no cut, no scratch, no squeeze, "
    "perfect condition"
)
"""The uncond prompt O2MAG samples and optimises against."""


@dataclass(frozen=True)
class GraftSettings:
    """steps/cfg: DDIM steps and guidance. early_fraction: the first ``int(steps * early_fraction)`` steps build the
    target from the reference's and the normal's own self-attention (rule 1). start_step/start_layer/end_layer:
    rule 2 (the target's queries read the reference) from that step on, in transformers [start_layer, end_layer).
    tau: rule 2's temperature on the reference logits. cross_window: the fraction of steps where the defect words'
    cross-attention is multiplied by ``defect_gain`` inside the target mask (rule 3). optimise_steps/optimise_lr:
    Adam on the target's prompt embedding before sampling (0 skips it)."""

    steps: int = 50
    cfg: float = 7.5
    early_fraction: float = 0.1
    start_step: int = 4
    start_layer: int = 9
    end_layer: int = 16
    tau: float = 0.7
    cross_window: tuple[float, float] = (0.4, 0.8)
    defect_gain: float = 100.0
    negative: str = NEGATIVE
    optimise_steps: int = 500
    optimise_lr: float = 3e-3

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not self.cfg >= 1.0:
            raise ValueError(f"cfg must be >= 1 (1 turns guidance off), got {self.cfg!r}")
        if not 0 <= self.start_layer <= self.end_layer <= 16:
            raise ValueError(f"need 0 <= start_layer <= end_layer <= 16, got {self.start_layer}, {self.end_layer}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau!r}")
        if self.optimise_steps < 0 or not self.optimise_lr > 0:
            raise ValueError(
                f"optimise_steps must be >= 0 and optimise_lr > 0, got {self.optimise_steps}, {self.optimise_lr}"
            )

    @property
    def early_steps(self) -> int:
        return int(self.steps * self.early_fraction)

    @property
    def cross_steps(self) -> tuple[int, int]:
        return int(self.steps * self.cross_window[0]), int(self.steps * self.cross_window[1])


def prompts(category: str, defect: str) -> tuple[str, str, str]:
    """(normal, reference, target) cond prompts as O2MAG passes them: the first two look swapped relative to the
    branch roles; that is what its code does, and the target's is replaced by the optimised embedding anyway."""
    with_defect = f"a photo of a {category} with a {defect}"
    return with_defect, f"a photo of a {category}", with_defect


def find_tokens(ids: list[int], word: list[int]) -> tuple[int, ...]:
    """Positions of the last occurrence of ``word`` in ``ids``; () when absent."""
    for start in range(len(ids) - len(word), -1, -1):
        if word and list(ids[start : start + len(word)]) == list(word):
            return tuple(range(start, start + len(word)))
    return ()
