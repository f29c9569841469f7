"""Per-call time of the Export Dataset node over many queued prompts: flat, since a call only appends.

    OMP_NUM_THREADS=1 .venv-test/bin/python bench/export_append.py --calls 400

Each call is what one queued prompt does: Export Dataset with ``--batch`` images (``--size`` pixels square, one
defect each) in mvtec+coco into one set in a temporary ComfyUI output folder. Then a second set gets the same calls,
each followed by a rebuild of its COCO file (what the nodes did before; run second so its garbage does not slow the
first set's calls). Prints, for each, the median time of the first and the last ``--window`` calls and their ratio,
in wall-clock and in this process's CPU time, the Python function calls of one append call before and after the
timed calls (the work, which load on a shared machine does not move), and the time of the one
Finalise Dataset at the end of the append-only set (it reads every record: it grows with
the set, once).
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


def _function_calls(call) -> int:
    """How many Python function calls ``call()`` makes (cProfile's count): the work done, whatever the load."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(call)
    return pstats.Stats(profiler).total_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--batch", type=int, default=2, help="pairs per call (per prompt)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--window", type=int, default=20, help="calls per median")
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
    modes = ("append only", "append + rebuild every call")
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as out:
        folder_paths.set_output_directory(out)

        def append() -> None:
            export_node.export(images, masks, "appended", "bottle", "crack", "mvtec+coco")

        append()  # a first call pays for one-time set-up (imports, folders)
        work = [_function_calls(append)]  # the second call's work, counted (not timed)
        for mode, folder in (("append only", "appended"), ("append + rebuild every call", "rebuilt")):
            for _ in range(args.calls):
                start, start_cpu = time.perf_counter(), time.process_time()
                export_node.export(images, masks, folder, "bottle", "crack", "mvtec+coco")
                if folder == "rebuilt":
                    finalise_node.finalise(folder, "bottle")
                times[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
        work.append(_function_calls(append))  # and one more after the timed calls
        start = time.perf_counter()
        (summary,) = finalise_node.finalise("appended", "bottle")["result"]
        final = time.perf_counter() - start
    print(f"{args.calls} calls of {args.batch} {args.size}px pairs per set")
    for mode in modes:
        for clock, spent in (("wall", times[mode]), ("CPU", cpu[mode])):
            first, last = (statistics.median(part) * 1e3 for part in (spent[: args.window], spent[-args.window :]))
            print(
                f"{mode}, {clock}: median per call, calls 1-{args.window}: {first:.2f} ms; last {args.window}: "
                f"{last:.2f} ms; ratio {last / first:.2f}"
            )
    print(
        f"append only, Python function calls per call (load-independent work): call 2: {work[0]}, call "
        f"{args.calls + 3}: {work[1]}"
    )
    print(f"Finalise Dataset once at the end: {final * 1e3:.1f} ms ({summary.split(': ', 1)[1]})")


if __name__ == "__main__":
    main()
