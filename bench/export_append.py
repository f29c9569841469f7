"""Per-call time of the Export Dataset node over many queued prompts: flat, since a call only appends.

    OMP_NUM_THREADS=1 .venv-test/bin/python bench/export_append.py --calls 400
    OMP_NUM_THREADS=1 .venv-test/bin/python bench/export_append.py --calls 400 --merge-every-call

Each call is what one queued prompt does: Export Dataset with ``--batch`` images (``--size`` pixels square, one
defect each) in mvtec+coco into one set in a temporary ComfyUI output folder. Prints the median time of the
first and the last ``--window`` calls, their ratio, and the time of the one Finalise Dataset at the end (which
reads every record: it grows with the set, once). ``--merge-every-call`` rebuilds the COCO file after each call
instead (what the nodes did before), for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "comfy"))

from pack import import_pack
from tiny import init_comfy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--batch", type=int, default=2, help="pairs per call (per prompt)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--window", type=int, default=20, help="calls per median")
    parser.add_argument("--merge-every-call", action="store_true", help="also rebuild the COCO file every call")
    args = parser.parse_args()
    init_comfy()
    import folder_paths
    import torch

    pack = import_pack()
    export_node = pack.nodes.NODE_CLASS_MAPPINGS["DualAnoDiffExportDataset"]()
    finalise_node = pack.nodes.NODE_CLASS_MAPPINGS["DualAnoDiffFinaliseDataset"]()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, args.size, args.size, 3, generator=generator)
    masks = torch.zeros(args.batch, args.size, args.size)
    masks[:, args.size // 4 : args.size // 2, args.size // 3 : args.size // 2] = 1.0
    with tempfile.TemporaryDirectory() as out:
        folder_paths.set_output_directory(out)
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            export_node.export(images, masks, "bench_set", "bottle", "crack", "mvtec+coco")
            if args.merge_every_call:
                finalise_node.finalise("bench_set", "bottle")
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        (summary,) = finalise_node.finalise("bench_set", "bottle")["result"]
        final = time.perf_counter() - start
    first, last = (statistics.median(part) * 1e3 for part in (times[: args.window], times[-args.window :]))
    mode = "append + merge every call" if args.merge_every_call else "append only"
    print(f"{mode}: {args.calls} calls of {args.batch} {args.size}px pairs")
    print(f"median per call, calls 1-{args.window}: {first:.2f} ms; last {args.window}: {last:.2f} ms; "
          f"ratio {last / first:.2f}")  # fmt: skip
    print(f"Finalise Dataset once at the end: {final * 1e3:.1f} ms ({summary.split(': ', 1)[1]})")


if __name__ == "__main__":
    main()
