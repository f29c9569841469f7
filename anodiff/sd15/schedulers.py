"""The sampling schedulers ``anodiff generate`` offers, made from diffusers (kept apart from the loop in ``sampling``,
which the ComfyUI nodes reach without diffusers)."""

from __future__ import annotations

SCHEDULERS = ("pndm", "ddim", "euler", "dpm++")


def make_scheduler(name: str, config: dict) -> object:
    """A fresh sampling scheduler from the base model's training-scheduler config (SD1.5's settings kept)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    if name == "pndm":  # the authors' sampler: SD1.5's default PNDM
        return PNDMScheduler.from_config(config, skip_prk_steps=True, set_alpha_to_one=False)
    if name == "ddim":
        return DDIMScheduler.from_config(config, set_alpha_to_one=False)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
