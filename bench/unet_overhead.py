"""One UNet forward with the dual processors (rank-32 LoRA + SAIM, folded and unfolded) / the vanilla UNet.

    .venv-test/bin/python bench/unet_overhead.py                 # SD1.5's real configuration, 64x64 latents, CPU fp32
    .venv-test/bin/python bench/unet_overhead.py --size tiny     # seconds, for a smoke test
    .venv-test/bin/python bench/unet_overhead.py --before 467855d  # also the processor as it was at that commit

Same random SD1.5 UNet (diffusers, SD1.5's config), same 2N rows (N pairs, no CFG), the vanilla run with diffusers'
own ``AttnProcessor2_0``. Timings are interleaved rounds (vanilla, folded, unfolded, then the next round), so drifting
machine load hits all variants alike; each round starts at the next variant (rotated order, one round per rotation by
default), so no variant always runs right after another, and a variant's ratio is the median over rounds of its time
/ vanilla's time in the same round. FLOPs are counted by ``torch.utils.flop_counter`` on the meta device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anodiff import DualAdapter, DualConfig
from anodiff.sd15.config import UNET
from anodiff.sd15.processor import UNetPass, install

TINY = {"block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 32}


def build(size: str, device: str | torch.device = "cpu"):
    """(UNet, DualAdapter with non-zero LoRA) with random weights."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in UNET.items() if not k.startswith("_")}
    if size == "tiny":
        config.update(TINY)
    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config).eval().requires_grad_(False)
        channels, context = tuple(config["block_out_channels"]), int(config["cross_attention_dim"])
        adapter = DualAdapter(DualConfig(rank=min(32, channels[0])), channels, context).requires_grad_(False)
        for layer in adapter.values():
            for name in ("to_q", "to_k", "to_v", "to_out"):
                torch.nn.init.normal_(layer.lora(name).up, std=0.01)
    return unet, adapter


def load_before(commit: str):
    """This repository's ``anodiff`` as it was at ``commit``, importable as ``anodiff_before`` (git archive)."""
    import importlib
    import io
    import subprocess
    import tarfile
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="anodiff_before_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "anodiff"], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "anodiff").rename(folder / "anodiff_before")
    sys.path.insert(0, str(folder))
    return importlib.import_module("anodiff_before.processor"), importlib.import_module("anodiff_before")


class Variants:
    """Switches one UNet between the vanilla processors and the dual ones (folded / unfolded / ``before``)."""

    def __init__(self, unet, adapter, before=None, device: str = "cpu") -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.unet, self.vanilla, self.before = unet, AttnProcessor2_0(), before
        self.dual = {fold: dict(install(unet, adapter, fold_saim=fold)) for fold in (True, False)}
        if before is not None:  # the same weights in the old package's adapter
            processor, package = before
            old = package.DualAdapter(
                package.DualConfig(rank=adapter.config.rank), adapter.channels, adapter.context_dim
            )
            if device != "meta":
                old.load_state_dict(adapter.state_dict())
            self.dual["before"] = dict(processor.install(unet, old.to(device).requires_grad_(False)))

    def run(self, name: str, x, t, ctx):
        if name == "vanilla":
            self.unet.set_attn_processor(self.vanilla)
            return self.unet(x, t, ctx, return_dict=False)[0]
        key = "before" if name == "before" else name == "folded"
        self.unet.set_attn_processor(dict(self.dual[key]))
        run = self.before[0].DualPass() if name == "before" else UNetPass()
        return self.unet(x, t, ctx, cross_attention_kwargs={"dual": run}, return_dict=False)[0]


def inputs(pairs: int, latent: int, context: int, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * pairs, 4, latent, latent, generator=g).to(device)
    ctx = torch.randn(2 * pairs, 77, context, generator=g).to(device)
    return x, torch.tensor(500, device=device), ctx


def flops(size: str, pairs: int, latent: int, before=None, names=("vanilla", "folded", "unfolded")) -> dict[str, int]:
    """FLOPs of one forward per variant, counted on meta tensors (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet, adapter = build(size, "meta")
    variants = Variants(unet, adapter, before, "meta")
    x, t, ctx = inputs(pairs, latent, unet.config.cross_attention_dim, "meta")

    def addmm_(_, a, b, *args, out_shape=None, **kwargs) -> int:  # shapes, like the counter's own formulas
        return 2 * a[0] * a[1] * b[1]

    def baddbmm_(_, a, b, *args, out_shape=None, **kwargs) -> int:
        return 2 * a[0] * a[1] * a[2] * b[2]

    aten = torch.ops.aten
    in_place = {aten.addmm_: addmm_, aten.baddbmm_: baddbmm_}  # the counter only knows the out-of-place ops
    counted = {}
    for name in names:
        with torch.no_grad():
            variants.run(name, x, t, ctx)  # folds SAIM once: not part of a forward's cost
        counter = FlopCounterMode(display=False, custom_mapping=in_place)
        with torch.no_grad(), counter:
            variants.run(name, x, t, ctx)
        counted[name] = counter.get_total_flops()
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--pairs", type=int, default=2, help="N: the UNet runs 2N rows")
    parser.add_argument("--latent", type=int, default=64, help="latent side (64 = 512 px)")
    parser.add_argument("--repeats", type=int, default=0, help="rounds (0: one per variant, each order rotation once)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--before", help="a commit: also time the dual processor of anodiff as it was there")
    parser.add_argument("--reverse", action="store_true", help="rotate the reversed order")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    before = load_before(args.before) if args.before else None
    names = ("vanilla", "folded", "unfolded", "before") if before else ("vanilla", "folded", "unfolded")
    counted = flops(args.size, args.pairs, args.latent, before, names)
    unet, adapter = build(args.size)
    variants = Variants(unet, adapter, before)
    x, t, ctx = inputs(args.pairs, args.latent, unet.config.cross_attention_dim)
    order = tuple(reversed(names)) if args.reverse else names
    rounds = args.repeats or len(names)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        outputs = {name: variants.run(name, x, t, ctx) for name in names}  # warm-up; folds SAIM once
        for index in range(rounds):
            shift = index % len(order)
            for name in order[shift:] + order[:shift]:
                start, start_cpu = time.perf_counter(), time.process_time()
                variants.run(name, x, t, ctx)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    drift = (outputs["folded"] - outputs["unfolded"]).abs().max().item()

    def ratio(times: dict[str, list[float]], name: str) -> float:  # median of same-round ratios
        return statistics.median(a / b for a, b in zip(times[name], times["vanilla"]))

    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"UNet {args.size} ({params:.0f} M params), {2 * args.pairs} rows of {args.latent}x{args.latent}, "
        f"{torch.get_num_threads()} threads, {rounds} interleaved rounds in rotated order; "
        f"|folded - unfolded| max {drift:.1e}"
    )
    print(
        "x: median over rounds of time / vanilla's time in the same round. CPU time counts this process only, so "
        "it is the steadier figure on a shared machine (1 thread)."
    )
    for name in names:
        runs = " ".join(f"{v:.2f}" for v in wall[name])
        print(
            f"{name:9s} wall {statistics.median(wall[name]):7.2f} s x{ratio(wall, name):.3f}   "
            f"CPU {statistics.median(cpu[name]):7.2f} s x{ratio(cpu, name):.3f}   "
            f"FLOPs x{counted[name] / counted['vanilla']:.3f} ({counted[name] / 1e9:.1f} GFLOP)   wall runs [s]: {runs}"
        )


if __name__ == "__main__":
    main()
