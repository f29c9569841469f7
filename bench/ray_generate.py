"""``anodiff generate --ray`` throughput: pairs per minute with 1 and 2 pipeline actors, and their ratio, in one run.

    OMP_NUM_THREADS=1 .venv-test/bin/python bench/ray_generate.py                 # CPU actors, tiny SD1.5 model
    .venv-test/bin/python bench/ray_generate.py --device cuda --replicas 1 2 4 \\
        --base SD15 --weights model.safetensors --size 512 --steps 25 --count 64 --batch-size 8   # GPUs, real model

On CPUs each actor takes one CPU and runs torch on one thread; the local Ray instance gets ``replicas + 1`` CPUs
(one for the writer actor). On GPUs each actor takes one GPU (``--device cuda``). Every setting writes its own
fresh output folder. Two rates are printed: over the whole call (starting the actors and loading the model
included), and the steady state a large job sees (pairs after the first finished batch over the time from it to the
last batch). The settings' files are compared: they must be byte-identical (the same pairs and seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def tiny_model(folder: Path) -> tuple[Path, Path]:
    """The tests' random tiny SD1.5 folder and dual weight file."""
    from test_pipeline import dual_file
    from tiny_diffusers import save_tiny_sd15

    return save_tiny_sd15(folder / "sd15"), dual_file().save(folder / "dual.safetensors")


def run(args: argparse.Namespace, base: Path, weights: Path, out: Path, replicas: int) -> tuple[float, float]:
    """(seconds for the whole call, steady pairs per minute) generating ``args.count`` pairs on ``replicas`` actors."""
    from anodiff.generate.job import GenerateJob
    from anodiff.generate.run import generate
    from anodiff.scale.generate import ray_runner

    finished, done = [], GenerateJob.done

    def timed(job: GenerateJob, indices: list[int]) -> None:
        done(job, indices)
        finished.append((time.perf_counter(), len(indices)))

    GenerateJob.done = timed

    runner = ray_runner(replicas=replicas, device=args.device, writers=1, progress=False)
    start = time.perf_counter()
    report = generate(
        base,
        weights,
        out,
        args.count,
        batch_size=args.batch_size,
        steps=args.steps,
        scheduler=args.scheduler,
        size=args.size,
        mask_method=args.mask_method,
        device=args.device,
        progress=False,
        runner=runner,
    )
    seconds = time.perf_counter() - start
    GenerateJob.done = done
    assert report.written == args.count, report
    steady = sum(n for _, n in finished[1:]) / (finished[-1][0] - finished[0][0]) * 60
    return seconds, steady


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--base", default=None, help="SD1.5 (default: the tests' tiny random model)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--mask-method", default="grey")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base, weights = (Path(args.base), Path(args.weights)) if args.base else tiny_model(tmp)
        cpus = 1 + (max(args.replicas) if args.device == "cpu" else 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        rates = {}
        for replicas in args.replicas:
            seconds, rates[replicas] = run(args, base, weights, tmp / f"r{replicas}", replicas)
            print(
                f"{replicas} actor(s): {args.count} pairs in {seconds:.1f} s ({args.count / seconds * 60:.1f} "
                f"pairs/min with start-up), steady {rates[replicas]:.1f} pairs/min",
                flush=True,
            )
        first = args.replicas[0]
        for replicas in args.replicas[1:]:
            same = files(tmp / f"r{replicas}") == files(tmp / f"r{first}")
            print(
                f"{replicas} vs {first} actor(s): steady {rates[replicas] / rates[first]:.2f}x, byte-identical: {same}"
            )
        ray.shutdown()


if __name__ == "__main__":
    main()
