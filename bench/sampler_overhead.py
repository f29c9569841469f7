"""Dual Sampler step time / plain KSampler step time on the same 2N latents, in one run.

    .venv-test/bin/python bench/sampler_overhead.py --size tiny
    .venv-test/bin/python bench/sampler_overhead.py --size sd15 --latent 32 --steps 2

Both runs use the same random SD1.5-layout ComfyUI model, the same noise, CFG and sampler; the dual run adds
the per-branch LoRA (rank 32) on all 128 projections and SAIM after all 32 attentions. ``--size sd15`` is
SD1.5's real width (860 M UNet parameters, 124 M SAIM, 12.75 M LoRA).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "comfy"))

from pack import import_pack
from tiny import TINY_UNET_CONFIG, fill_deterministic, init_comfy


def build_model(size: str, device: str):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config = dict(TINY_UNET_CONFIG)
    if size == "sd15":
        config.update(model_channels=320, context_dim=768)
    model_config = comfy.supported_models.SD15(config)
    model_config.set_inference_dtype(torch.float16 if device == "cuda" else torch.float32, None)
    model = model_config.get_model({})
    fill_deterministic(model.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: loading, lazy casts, kernel selection
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--pairs", type=int, default=2, help="N: the dual run samples N pairs = 2N latents")
    parser.add_argument("--latent", type=int, default=16, help="latent side (pixels / 8)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="use CUDA when present (default: CPU)")
    args = parser.parse_args()

    init_comfy(cpu=not args.gpu)
    import comfy.model_management as mm
    import comfy.sample
    import torch

    device = mm.get_torch_device().type
    import_pack()  # the pack's modules below are importable as dualanodiff_pack.*
    from dualanodiff_pack.anodiff import DualAdapter, DualConfig
    from dualanodiff_pack.nodes.patch import DualPatch, apply_dual
    from dualanodiff_pack.nodes.sampler import pair_conditioning, sample_pairs

    model = build_model(args.size, device)
    channels = tuple(model.model.model_config.unet_config["model_channels"] * m for m in (1, 2, 4, 4))
    context = model.model.model_config.unet_config["context_dim"]
    rank = min(32, channels[0])
    adapter = DualAdapter(DualConfig(rank=rank), channels, context)
    with torch.no_grad():
        for _, layer in adapter.items():
            for name in ("to_q", "to_k", "to_v", "to_out"):
                layer.lora(name).up.normal_(std=0.01)
    dual = apply_dual(model, DualPatch(adapter, (1.0, 1.0)))

    n, side = args.pairs, args.latent
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, context, generator=g), {}]]
    cond_a = [[torch.randn(1, 77, context, generator=g), {}]]
    neg = [[torch.randn(1, 77, context, generator=g), {}]]
    latents = torch.zeros(2 * n, 4, side, side)
    noise = comfy.sample.prepare_noise(latents, 0)
    common = dict(disable_pbar=True, seed=0)

    def plain():
        comfy.sample.sample(model, noise, args.steps, 2.0, "euler", "normal", pair_conditioning(cond, cond_a), neg,
                            latents, **common)  # fmt: skip

    def paired():
        sample_pairs(dual, cond, cond_a, neg, {"samples": torch.zeros(n, 4, side, side)}, 0, args.steps, 2.0,
                     "euler", "normal", 1.0)  # fmt: skip

    params = sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6
    extra = sum(p.numel() for p in adapter.parameters()) / 1e6
    t_plain = timed(plain, args.repeats) / args.steps
    t_dual = timed(paired, args.repeats) / args.steps
    print(f"device {device}, UNet {params:.1f} M params (+{extra:.1f} M dual), {2 * n} latents of {side}x{side}, CFG")
    print(f"plain KSampler step {t_plain * 1000:.1f} ms, Dual Sampler step {t_dual * 1000:.1f} ms")
    print(f"ratio dual/plain = {t_dual / t_plain:.2f}")


if __name__ == "__main__":
    main()
