"""Dual Sampler step time / plain KSampler step time on the same 2N latents, in one run.

    .venv-test/bin/python bench/sampler_overhead.py --size tiny --latent 16
    .venv-test/bin/python bench/sampler_overhead.py --size sd15 --latent 64 --steps 1 --cfg 1 --repeats 3

Both runs use the same random SD1.5-layout ComfyUI model, the same noise, CFG and sampler; the dual run adds
the per-branch LoRA (rank 32) on all 128 projections and SAIM (folded) after all 32 attentions. ``--size sd15``
is SD1.5's real width (860 M UNet parameters; 124 M SAIM parameters, 50 M once folded; 12.75 M LoRA). Times
are medians of interleaved repeats (plain, dual, plain, ...), so drifting machine load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
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
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def interleaved_medians(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) median seconds per call of each function, run in turn ``repeats`` times after one warm-up each.
    CPU time counts this process only: the steadier figure on a shared machine (use one thread)."""
    for fn in fns.values():
        fn()  # warm-up: loading, the SAIM fold, kernel selection
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - start, time.process_time() - start_cpu))
    return {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--pairs", type=int, default=2, help="N: the dual run samples N pairs = 2N latents")
    parser.add_argument("--latent", type=int, default=64, help="latent side (pixels / 8; 64 = 512 px)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.0, help="1.0 runs the cond chunk only (half the rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="use CUDA when present (default: CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    init_comfy(cpu=not args.gpu)
    import comfy.model_management as mm
    import comfy.sample
    import torch

    device = mm.get_torch_device().type
    import_pack()  # the pack's modules below are importable as dualanodiff_pack.*
    from dualanodiff_pack.anodiff import DualAdapter, DualConfig
    from dualanodiff_pack.nodes.model.patch import DualPatch, apply_dual, compute_dtype
    from dualanodiff_pack.nodes.sampling.sampler import pair_conditioning, sample_pairs

    model = build_model(args.size, device)
    channels = tuple(model.model.model_config.unet_config["model_channels"] * m for m in (1, 2, 4, 4))
    context = model.model.model_config.unet_config["context_dim"]
    rank = min(32, channels[0])
    adapter = DualAdapter(DualConfig(rank=rank), channels, context)
    with torch.no_grad():
        for layer in adapter.values():
            for name in ("to_q", "to_k", "to_v", "to_out"):
                layer.lora(name).up.normal_(std=0.01)
    dual = apply_dual(model, DualPatch(adapter, (1.0, 1.0), dtype=compute_dtype(model), device=model.offload_device))

    n, side = args.pairs, args.latent
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, context, generator=g), {}]]
    cond_a = [[torch.randn(1, 77, context, generator=g), {}]]
    neg = [[torch.randn(1, 77, context, generator=g), {}]]
    latents = torch.zeros(2 * n, 4, side, side)
    noise = comfy.sample.prepare_noise(latents, 0)
    common = {"disable_pbar": True, "seed": 0}

    def plain():
        comfy.sample.sample(
            model,
            noise,
            args.steps,
            args.cfg,
            "euler",
            "normal",
            pair_conditioning(cond, cond_a),
            neg,
            latents,
            **common,
        )

    def paired():
        sample_pairs(
            dual,
            cond,
            cond_a,
            neg,
            {"samples": torch.zeros(n, 4, side, side)},
            0,
            args.steps,
            args.cfg,
            "euler",
            "normal",
            1.0,
        )

    params = sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6
    extra = sum(p.numel() for p in adapter.parameters()) / 1e6
    medians = interleaved_medians({"plain": plain, "dual": paired}, args.repeats)
    (w_plain, c_plain), (w_dual, c_dual) = medians["plain"], medians["dual"]
    print(
        f"device {device}, {torch.get_num_threads()} threads, UNet {params:.1f} M params (+{extra:.1f} M dual file), "
        f"{2 * n} latents of {side}x{side}, cfg {args.cfg}, median of {args.repeats} interleaved repeats"
    )
    steps = args.steps
    print(
        f"plain KSampler step: wall {w_plain / steps:.2f} s, CPU {c_plain / steps:.2f} s; "
        f"Dual Sampler step: wall {w_dual / steps:.2f} s, CPU {c_dual / steps:.2f} s"
    )
    print(f"ratio dual/plain = {w_dual / w_plain:.3f} (wall), {c_dual / c_plain:.3f} (CPU time)")


if __name__ == "__main__":
    main()
