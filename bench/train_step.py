"""Training step time and peak memory: our settings against the authors' (fp32, no gradient checkpointing).

    .venv/bin/python bench/train_step.py                      # CPU, reduced SD1.5 widths
    .venv/bin/python bench/train_step.py --channels 320,640,1280,1280 --resolution 512 --batch 4   # full size (GPU)

Each setting trains in its own process on the same random SD1.5-layout model and data, so peak memory (GPU: CUDA
peak allocated; CPU: the process's peak RSS) is measured per setting. "ours" uses bf16 autocast where the
hardware has it (CUDA with bf16, or a CPU with AMX) and gradient checkpointing; the ratios are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def bf16_available() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return "AMX" in torch.backends.cpu.get_cpu_capability()


def worker(spec: dict) -> None:
    import torch

    from anodiff.train.trainer import TrainConfig, Trainer

    config = TrainConfig(**spec["config"])
    trainer = Trainer(config)
    cuda = torch.cuda.is_available()
    trainer.train_step()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / spec["steps"]
    peak = torch.cuda.max_memory_allocated() if cuda else None
    print(json.dumps({"seconds": seconds, "cuda_peak": peak}))


def run_setting(name: str, config: dict, steps: int) -> dict:
    spec = json.dumps({"config": config, "steps": steps})
    proc = subprocess.Popen([sys.executable, __file__, "--worker", spec], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    if status != 0:
        raise SystemExit(f"{name} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    rss = usage.ru_maxrss * 1024  # kilobytes on Linux
    result["peak_bytes"] = result["cuda_peak"] or rss
    result["name"] = name
    return result


def measure(
    channels: tuple[int, ...], context: int, resolution: int, batch: int, rank: int, steps: int, sd15_vae: bool = False
) -> list[dict]:
    """[authors' setting, ours]: seconds per step and peak bytes, each trained in its own process."""
    from test_train import write_fixed_defect_set
    from tiny_diffusers import save_tiny_sd15

    with tempfile.TemporaryDirectory() as tmp:
        base = save_tiny_sd15(Path(tmp) / "sd15", channels=channels, context=context, sd15_vae=sd15_vae)
        data = write_fixed_defect_set(Path(tmp) / "data", n=9, size=resolution)
        common = {
            "base": str(base),
            "data": str(data),
            "output": str(Path(tmp) / "out"),
            "steps": 10**6,
            "batch_size": batch,
            "resolution": resolution,
            "rank": rank,
            "text_rank": min(rank, 32),
            "progress": False,
            "force": True,
        }
        precision = "bf16" if bf16_available() else "no"
        settings = {
            "authors (fp32, no checkpointing)": dict(common, mixed_precision="no", gradient_checkpointing=False),
            f"ours ({'bf16' if precision == 'bf16' else 'fp32'}, checkpointing)": dict(
                common, mixed_precision=precision, gradient_checkpointing=True
            ),
        }
        return [run_setting(name, config, steps) for name, config in settings.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="64,128,256,256", help="UNet widths (SD1.5: 320,640,1280,1280)")
    parser.add_argument("--context", type=int, default=768)
    parser.add_argument("--resolution", type=int, default=64, help="pixels; the test VAE halves them (SD's: /8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sd15-vae", action="store_true", help="SD1.5's VAE (8x) instead of the tiny 2x one")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    channels = tuple(int(c) for c in args.channels.split(","))
    results = measure(channels, args.context, args.resolution, args.batch, args.rank, args.steps, args.sd15_vae)
    authors, ours = results
    print(
        f"UNet widths {channels}, context {args.context}, {args.resolution}px, batch {args.batch} pairs, rank "
        f"{args.rank}"
    )
    for r in results:
        print(f"{r['name']:<36} {r['seconds']:.3f} s/step  peak {r['peak_bytes'] / 2**30:.2f} GiB")
    print(f"speed ratio ours/authors (steps per second) = {authors['seconds'] / ours['seconds']:.2f}")
    print(f"memory ratio ours/authors = {ours['peak_bytes'] / authors['peak_bytes']:.2f}")


if __name__ == "__main__":
    main()
