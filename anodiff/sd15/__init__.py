"""Stable Diffusion 1.5 with the dual model: loading the frozen base, the diffusers attention processor, and THE
sampling pipeline that generation, training previews and evaluation all use."""
