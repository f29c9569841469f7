"""GPU check: Dual Sampler runs under ComfyUI's --lowvram, --novram and (ComfyUI 0.33+) dynamic VRAM, and
matches the normal (full load) run; then ComfyUI partially unloads the UNet and the dual model must leave the GPU
with it (dynamic VRAM: stays resident, like the weights ComfyUI force-loads) and sample the same again.

    .venv-test/bin/python bench/comfy_vram_modes.py [--size sd15] [--latent 64]
    .venv-comfy-next/bin/python bench/comfy_vram_modes.py   # ComfyUI 0.33: adds the dynamic VRAM mode

Each mode runs in its own process (ComfyUI fixes its VRAM state at import). Same random SD1.5-layout model
(fp16 on the GPU), same dual model, seed and sampler; prints each mode's max |difference| to the normal run,
the dual model's device after sampling and after the partial unload, and exits 1 when a mode fails or differs
by more than --tolerance. Needs a CUDA GPU (exits 2 without one).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("normal", "lowvram", "novram", "dynamic")


def enable_dynamic_vram(mm) -> None:
    """What ComfyUI 0.33's main.py does on an NVIDIA GPU: comfy-aimdo per device, ``ModelPatcherDynamic``."""
    import comfy.memory_management
    import comfy.model_patcher
    import comfy_aimdo.control

    for call in (lambda: comfy_aimdo.control.init(simple_vram_headroom=None), comfy_aimdo.control.init):
        try:
            call()
            break
        except TypeError:  # older comfy-aimdo protocols
            continue
    if not comfy_aimdo.control.init_devices(d.index for d in mm.get_all_torch_devices()):
        raise RuntimeError("comfy-aimdo found no device: dynamic VRAM unavailable")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True


def partial_unload(mm, model) -> str:
    """Free half of the loaded UNet as ComfyUI does for another model; where the dual model is then."""
    from dualanodiff_pack.nodes.model.patch import find_dual

    (loaded,) = [m for m in mm.current_loaded_models if m.model is model]
    if model.loaded_size() < 2:
        return "(nothing loaded to unload)"
    loaded.model_unload(memory_to_free=model.loaded_size() // 2)
    return str(next(find_dual(model).adapter.parameters()).device)


def child(mode: str, size: str, latent: int, out: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "comfy"))
    sys.path.insert(0, str(ROOT / "bench"))
    from tiny import add_comfyui_to_path

    add_comfyui_to_path()
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    if mode in ("lowvram", "novram"):
        setattr(comfy.cli_args.args, mode, True)
    import comfy.model_management as mm

    if mode == "dynamic":
        import comfy.model_patcher

        if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
            raise SystemExit(3)  # this ComfyUI predates dynamic VRAM
        enable_dynamic_vram(mm)
    import torch
    from pack import import_pack
    from sampler_overhead import build_model

    import_pack()
    from dualanodiff_pack.anodiff import DualAdapter, DualConfig
    from dualanodiff_pack.nodes.model.patch import DualPatch, apply_dual, compute_dtype, find_dual
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    model = build_model(size, mm.get_torch_device().type)
    if mode == "dynamic":
        model = comfy.model_patcher.CoreModelPatcher(
            model.model, load_device=model.load_device, offload_device=model.offload_device
        )
    config = model.model.model_config.unet_config
    channels = tuple(config["model_channels"] * m for m in (1, 2, 4, 4))
    adapter = DualAdapter(DualConfig(rank=min(32, channels[0])), channels, config["context_dim"])
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in adapter.values():
            for name in ("to_q", "to_k", "to_v", "to_out"):
                layer.lora(name).up.normal_(std=0.01)
    dual = apply_dual(model, DualPatch(adapter, (1.0, 1.0), dtype=compute_dtype(model), device=model.offload_device))
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, config["context_dim"], generator=g), {}]]
    cond_a = [[torch.randn(1, 77, config["context_dim"], generator=g), {}]]
    neg = [[torch.randn(1, 77, config["context_dim"], generator=g), {}]]

    def sample():
        return sample_pairs(
            dual, cond, cond_a, neg, {"samples": torch.zeros(2, 4, latent, latent)}, 7, 4, 2.0, "euler", "normal", 1.0
        )

    glob, anomaly, _ = sample()
    device = next(find_dual(dual).adapter.parameters()).device
    after_unload = partial_unload(mm, dual)
    again, _, _ = sample()
    redo = (again["samples"].float() - glob["samples"].float()).abs().max().item()
    torch.save(
        {
            "global": glob["samples"],
            "anomaly": anomaly["samples"],
            "device": str(device),
            "after_unload": after_unload,
            "redo": redo,
            "dynamic": dual.is_dynamic(),
        },
        out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="sd15")
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--tolerance", type=float, default=1e-2, help="max |difference| in the fp16 latents")
    parser.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return child(args.run, args.size, args.latent, args.out)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: --lowvram/--novram only mean something on a GPU")
        sys.exit(2)
    results, failed = {}, False
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = str(Path(tmp) / f"{mode}.pt")
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--run",
                    mode,
                    "--out",
                    out,
                    "--size",
                    args.size,
                    "--latent",
                    str(args.latent),
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode == 3:
                print(f"{mode}: skipped (this ComfyUI has no dynamic VRAM; run it with ComfyUI 0.33+)")
                continue
            if done.returncode:
                print(f"{mode}: FAILED\n{done.stderr[-3000:]}")
                failed = True
                continue
            results[mode] = torch.load(out)
    for mode, result in results.items():
        failed |= result["redo"] > args.tolerance
        print(
            f"{mode}: dual model on {result['device']} after sampling, on {result['after_unload']} after a partial "
            f"unload; sampling again differs by {result['redo']:.2e} (dynamic patcher: {result['dynamic']})"
        )
        if mode == "normal" or "normal" not in results:
            continue
        diff = max((result[k].float() - results["normal"][k].float()).abs().max().item() for k in ("global", "anomaly"))
        failed |= diff > args.tolerance
        print(f"{mode}: max |diff| to normal {diff:.2e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
