"""The GPU numbers of the README in one table; ``bench/gpu_check.sh`` brings what a bare GPU machine lacks and runs it.

    bench/gpu_check.sh              # CUDA: SD1.5 sizes (about 5 minutes on one H200); CPU: small sizes (CI)
    bench/gpu_check.sh --small      # small sizes anywhere

Rows: (1) one UNet forward with the dual processors (rank-32 LoRA + SAIM, folded and unfolded) / the vanilla UNet
on the same 2N rows (``bench/unet_overhead.py``'s models, fp16 on CUDA); (2) a training step and its peak memory,
ours (bf16 where supported + gradient checkpointing) against the authors' setting (fp32, no checkpointing), batch
4 at 512 px with SD1.5's VAE (``bench/train_step.py``); (3) ``DualAnoDiffPipeline`` pairs per second, 25 DPM++
steps with CFG (fp16 on CUDA), sampling and VAE decode; (4) the ComfyUI Dual Sampler step / a plain KSampler step
on the same 2N latents (``bench/sampler_overhead.py``). Random weights everywhere: no download. A row whose
requirements are missing says why instead of failing the rest.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

FULL = {
    "unet": "sd15",
    "latent": 64,
    "channels": (320, 640, 1280, 1280),
    "context": 768,
    "pixels": 512,
    "train_batch": 4,
    "train_steps": 3,
    "gen_pairs": 4,
    "gen_steps": 25,
    "repeats": 5,
}
SMALL = {
    "unet": "tiny",
    "latent": 16,
    "channels": (32, 64, 64, 64),
    "context": 32,
    "pixels": 32,
    "train_batch": 2,
    "train_steps": 2,
    "gen_pairs": 2,
    "gen_steps": 5,
    "repeats": 3,
}


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def unet_overhead(size: dict, device: str, dtype) -> str:
    import torch
    from unet_overhead import Variants, build, inputs

    unet, adapter = build(size["unet"], device)
    unet.to(dtype)
    adapter.to(dtype)
    variants = Variants(unet, adapter)
    x, t, ctx = inputs(2, size["latent"], unet.config.cross_attention_dim, device)
    x, ctx = x.to(dtype), ctx.to(dtype)
    times: dict[str, list[float]] = {name: [] for name in ("vanilla", "folded", "unfolded")}
    with torch.no_grad():
        for name in times:
            variants.run(name, x, t, ctx)  # warm-up, and SAIM folded once
        for _ in range(size["repeats"]):
            for name, samples in times.items():
                _sync(device)
                start = time.perf_counter()
                variants.run(name, x, t, ctx)
                _sync(device)
                samples.append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    return (
        f"folded x{med['folded'] / med['vanilla']:.3f}, unfolded x{med['unfolded'] / med['vanilla']:.3f} "
        f"(vanilla {med['vanilla'] * 1000:.1f} ms)"
    )


def train_step(size: dict) -> str:
    from train_step import measure

    sd15_vae = size["unet"] == "sd15"
    resolution = size["pixels"] if sd15_vae else 2 * size["latent"]  # the tiny VAE downsamples 2x, SD1.5's 8x
    authors, ours = measure(
        size["channels"], size["context"], resolution, size["train_batch"], 32, size["train_steps"], sd15_vae
    )
    gib = 2**30
    return (
        f"ours {ours['seconds']:.3f} s/step, {ours['peak_bytes'] / gib:.2f} GiB ({ours['name']}); authors "
        f"{authors['seconds']:.3f} s/step, {authors['peak_bytes'] / gib:.2f} GiB; speed x"
        f"{authors['seconds'] / ours['seconds']:.2f}, memory x{ours['peak_bytes'] / authors['peak_bytes']:.2f}"
    )


def generate_rate(size: dict, device: str, dtype) -> str:
    from tiny_diffusers import randomize_, save_tiny_sd15

    from anodiff import DualAdapter, DualConfig, to_dual_file
    from anodiff.sd15.load import load_sd15
    from anodiff.sd15.pipeline import DualAnoDiffPipeline

    dual = to_dual_file(randomize_(DualAdapter(DualConfig(rank=32), size["channels"], size["context"]), std=0.02), None)

    sd15 = size["unet"] == "sd15"
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_sd15(Path(tmp) / "sd15", size["channels"], size["context"], sd15_vae=sd15)
        pipe = DualAnoDiffPipeline.from_sd15(load_sd15(folder, dtype=dtype), dual, device=device)
    side = size["pixels"] if sd15 else 2 * size["latent"]
    kw = {"height": side, "width": side, "scheduler": "dpm++", "cfg": 2.5, "progress": False}
    pipe(size["gen_pairs"], steps=2, **kw)  # warm-up
    _sync(device)
    start = time.perf_counter()
    pipe(size["gen_pairs"], steps=size["gen_steps"], **kw)
    _sync(device)
    seconds = time.perf_counter() - start
    rate = size["gen_pairs"] / seconds
    return f"{rate:.2f} pairs/s ({size['gen_pairs']} per batch, {side}px, {size['gen_steps']} steps)"


def comfy_ratio(size: dict, cuda: bool) -> str:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "sampler_overhead.py"),
        "--size",
        size["unet"],
        "--latent",
        str(size["latent"]),
        "--steps",
        "2",
        "--repeats",
        str(size["repeats"]),
    ] + (["--gpu"] if cuda else [])
    done = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True, timeout=600)
    found = re.search(r"ratio dual/plain = ([0-9.]+)", done.stdout)
    if done.returncode or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"not measured: {tail[0][:160]}"
    return f"x{float(found[1]):.2f}"


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small sizes even on a GPU (what CI runs on CPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    size = SMALL if args.small or not cuda else FULL
    device = "cuda" if cuda else "cpu"
    dtype = torch.float16 if cuda else torch.float32
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    label = "SD1.5" if size is FULL else "small"
    rows = [
        (
            "dual UNet forward / vanilla",
            f"{label}, 4 rows of {size['latent']}x{size['latent']}, {str(dtype)[6:]}",
            lambda: unet_overhead(size, device, dtype),
        ),
        ("training step, peak memory", f"{label}, batch {size['train_batch']}, rank 32", lambda: train_step(size)),
        (
            "generate",
            f"{label}, DPM++ {size['gen_steps']} steps, cfg 2.5, {str(dtype)[6:]}",
            lambda: generate_rate(size, device, dtype),
        ),
        (
            "ComfyUI Dual Sampler / KSampler",
            f"{label}, 4 latents of {size['latent']}x{size['latent']}",
            lambda: comfy_ratio(size, cuda),
        ),
    ]
    print(f"| measurement ({where}, torch {torch.__version__}) | setting | result |")
    print("|---|---|---|")
    failed = 0
    for name, setting, run in rows:
        try:
            result = run()
        except Exception as exc:  # noqa: BLE001 (one missing piece must not hide the other rows)
            traceback.print_exc(file=sys.stderr)
            result, failed = f"failed: {type(exc).__name__}: {str(exc)[:160]}", failed + 1
        print(f"| {name} | {setting} | {result} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
