"""One UNet forward with the dual processors (rank-32 LoRA + SAIM, folded and unfolded) / the vanilla UNet.

    .venv-test/bin/python bench/unet_overhead.py                 # SD1.5's real configuration, 64x64 latents, CPU fp32
    .venv-test/bin/python bench/unet_overhead.py --size tiny     # seconds, for a smoke test

Same random SD1.5 UNet (diffusers, SD1.5's config), same 2N rows (N pairs, no CFG), the vanilla run with diffusers'
own ``AttnProcessor2_0``. Timings are medians of interleaved repeats (vanilla, folded, unfolded, vanilla, ...), so
drifting machine load hits all three alike. FLOPs are counted by ``torch.utils.flop_counter`` on the meta device.
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

from anodiff import DualAdapter, DualConfig  # noqa: E402
from anodiff.processor import DualPass, install  # noqa: E402
from anodiff.sd15_config import UNET  # noqa: E402

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
        for _, layer in adapter.items():
            for name in ("to_q", "to_k", "to_v", "to_out"):
                torch.nn.init.normal_(layer.lora(name).up, std=0.01)
    return unet, adapter


class Variants:
    """Switches one UNet between the vanilla processors and the dual ones (folded / unfolded)."""

    def __init__(self, unet, adapter) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.unet, self.vanilla = unet, AttnProcessor2_0()
        self.dual = {fold: dict(install(unet, adapter, fold_saim=fold)) for fold in (True, False)}

    def run(self, name: str, x, t, ctx):
        if name == "vanilla":
            self.unet.set_attn_processor(self.vanilla)
            return self.unet(x, t, ctx, return_dict=False)[0]
        self.unet.set_attn_processor(dict(self.dual[name == "folded"]))
        return self.unet(x, t, ctx, cross_attention_kwargs={"dual": DualPass()}, return_dict=False)[0]


def inputs(pairs: int, latent: int, context: int, device="cpu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * pairs, 4, latent, latent, generator=g).to(device)
    ctx = torch.randn(2 * pairs, 77, context, generator=g).to(device)
    return x, torch.tensor(500, device=device), ctx


def flops(size: str, pairs: int, latent: int) -> dict[str, int]:
    """FLOPs of one forward per variant, counted on meta tensors (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet, adapter = build(size, "meta")
    variants = Variants(unet, adapter)
    x, t, ctx = inputs(pairs, latent, unet.config.cross_attention_dim, "meta")
    def addmm_(_, a, b, *args, out_shape=None, **kwargs) -> int:  # shapes, like the counter's own formulas
        return 2 * a[0] * a[1] * b[1]

    def baddbmm_(_, a, b, *args, out_shape=None, **kwargs) -> int:
        return 2 * a[0] * a[1] * a[2] * b[2]

    aten = torch.ops.aten
    in_place = {aten.addmm_: addmm_, aten.baddbmm_: baddbmm_}  # the counter only knows the out-of-place ops
    counted = {}
    for name in ("vanilla", "folded", "unfolded"):
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    counted = flops(args.size, args.pairs, args.latent)
    unet, adapter = build(args.size)
    variants = Variants(unet, adapter)
    x, t, ctx = inputs(args.pairs, args.latent, unet.config.cross_attention_dim)
    names = ("vanilla", "folded", "unfolded")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        outputs = {name: variants.run(name, x, t, ctx) for name in names}  # warm-up; folds SAIM once
        for _ in range(args.repeats):
            for name in names:
                start, start_cpu = time.perf_counter(), time.process_time()
                variants.run(name, x, t, ctx)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    drift = (outputs["folded"] - outputs["unfolded"]).abs().max().item()
    med_wall = {name: statistics.median(values) for name, values in wall.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"UNet {args.size} ({params:.0f} M params), {2 * args.pairs} rows of {args.latent}x{args.latent}, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats} interleaved repeats; "
          f"|folded - unfolded| max {drift:.1e}")  # fmt: skip
    print("CPU time counts this process only, so it is the steadier figure on a shared machine (1 thread).")
    for name in names:
        runs = " ".join(f"{v:.2f}" for v in wall[name])
        print(f"{name:9s} wall {med_wall[name]:7.2f} s x{med_wall[name] / med_wall['vanilla']:.3f}   "
              f"CPU {med_cpu[name]:7.2f} s x{med_cpu[name] / med_cpu['vanilla']:.3f}   "
              f"FLOPs x{counted[name] / counted['vanilla']:.3f} ({counted[name] / 1e9:.1f} GFLOP)   wall runs [s]: {runs}")  # fmt: skip


if __name__ == "__main__":
    main()
