"""Time and peak memory of one graft image (training-free) against one dual pair, same model, size and steps.

    .venv-test/bin/python bench/graft_vs_dual.py                       # tiny SD1.5-layout model, CPU
    .venv-test/bin/python bench/graft_vs_dual.py --channels 320 640 1280 1280 --context 768 --size 512 --vae sd15

Both run on the same random SD1.5-layout diffusers model (``tests/tiny_diffusers.py``; ``--channels``/``--context``
widen it). The dual pair is one ``DualAnoDiffPipeline`` call (both branches, CFG); the graft image is reported in
its parts: DDIM inversion of the reference and the normal image, the prompt-embedding optimisation (once per
reference; cached after), and the three-branch sampling. Peak memory: the rise of the process's resident set
over what it held before the step (Linux ``clear_refs`` resets the peak), or ``torch.cuda.max_memory_allocated``
on CUDA. Run each mode in a fresh process (``--only``) for a clean peak; the default runs both in turn.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


class Peak:
    """Peak memory of a block above its start, in MiB."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _rss(self, field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.start = self._rss("VmRSS")

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20 - self.start
        else:
            self.mib = self._rss("VmHWM") - self.start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, nargs=4, default=(32, 64, 64, 64))
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--vae", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--steps", type=int, default=50, help="sampling (and inversion) steps, both modes (default 50)")
    p.add_argument("--optimise-steps", type=int, default=500, help="graft: embedding Adam steps (default 500)")
    p.add_argument("--only", choices=("graft", "dual"), default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import numpy as np
    import torch
    from graft_fixtures import rect, reference_pair, textured
    from test_pipeline import dual_file
    from tiny_diffusers import save_tiny_sd15

    from anodiff.graft.config import GraftSettings
    from anodiff.graft.inputs import GraftInputs
    from anodiff.graft.sampler import GraftSampler
    from anodiff.sd15.load import load_sd15
    from anodiff.sd15.pipeline import DualAnoDiffPipeline

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_sd15(Path(tmp), tuple(args.channels), args.context, sd15_vae=args.vae == "sd15")
        s = args.size
        if args.only in (None, "dual"):
            pipe = DualAnoDiffPipeline.from_sd15(
                load_sd15(folder), dual_file(channels=tuple(args.channels)), device=args.device
            )
            pipe(1, s, s, steps=2, cfg=2.5, scheduler="ddim", progress=False)  # warm-up
            peak = Peak(args.device)
            with peak:
                start = time.perf_counter()
                pipe(1, s, s, steps=args.steps, cfg=2.5, scheduler="ddim", progress=False)
                rows.append(("dual pair (2 branches, CFG)", time.perf_counter() - start, peak))
            del pipe
        if args.only in (None, "graft"):
            base = load_sd15(folder)
            for m in (base.unet, base.vae, base.text_encoder):
                m.to(args.device)
            reference, ref_mask = reference_pair(s)
            inputs = GraftInputs.checked(reference, ref_mask, textured(2, s), rect(s, s // 4, s // 2, s // 4, s // 2))
            GraftSampler(base, GraftSettings(steps=2, optimise_steps=1), progress=False)(inputs)  # warm-up
            sampler = GraftSampler(
                base, GraftSettings(steps=args.steps, optimise_steps=args.optimise_steps), progress=False
            )
            peak, again = Peak(args.device), Peak(args.device)
            with peak:
                result = sampler(inputs)
            with again:
                second = sampler(inputs)
            for part in ("inversion", "optimisation", "sampling"):
                rows.append((f"graft: {part}", result.seconds[part], None))
            rows.append(("graft image, first for a reference", sum(result.seconds.values()), peak))
            rows.append(("graft image, reference cached", sum(second.seconds.values()), again))
            assert np.isfinite(result.image).all()
    print(
        f"\nSD1.5-layout UNet channels {tuple(args.channels)}, {args.size}x{args.size}, {args.steps} steps, "
        f"{args.optimise_steps} optimisation steps, {args.device}, 1 thread\n"
    )
    print("| run | seconds | peak memory above start (MiB) |\n|---|---|---|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.2f} | {'' if peak is None else f'{peak.mib:.0f}'} |")


if __name__ == "__main__":
    main()
