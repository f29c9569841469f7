"""``--ray`` on a local Ray cluster started once for this module (2 CPUs, no dashboard): generation equals the
one-process run through a killed actor and an interrupted driver, a killed training task resumes to the same
weights, the storage check, and the errors that need a running cluster."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pipeline import SIZE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
KW = {"batch_size": 2, "steps": 2, "scheduler": "ddim", "size": SIZE, "mask_method": "grey", "progress": False}
COUNT = 6


@pytest.fixture(scope="module")
def ray():
    """One local cluster for the module. The fault wrappers below travel by value: pytest names this module after
    the checkout's folder, which the workers cannot import."""
    try:
        import ray
    except ImportError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Ray tests (pip install -e .[test]): {err}", pytrace=False)
        pytest.skip(str(err))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), before) if p)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def one_process(sd_dir, plain_weights, tmp_path_factory):
    """The reference: the same pairs from ``generate`` without Ray."""
    from anodiff.generate.run import generate

    out = tmp_path_factory.mktemp("one")
    assert generate(sd_dir, plain_weights, out, COUNT, **KW).written == COUNT
    return files(out)


def generate_argv(base: Path, weights: Path, out: Path) -> list[str]:
    """``anodiff generate`` with the settings of ``KW`` and ``COUNT``, as the command line takes them."""
    flags = [
        arg for key, value in KW.items() if key != "progress" for arg in (f"--{key.replace('_', '-')}", str(value))
    ]
    return [
        "generate",
        "--base",
        str(base),
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--count",
        str(COUNT),
        *flags,
    ]


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the settings record and lock files (which name their own folder)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".anodiff-generate")
    }


@dataclass(frozen=True)
class KillOnce:
    """A pipeline factory whose actor kills itself (``ray.kill``) in the middle of its second batch, once."""

    inner: object
    marker: str

    def __call__(self):
        pipes = self.inner()
        original, calls = type(pipes[0]).__call__, []

        def sample(pipe, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2 and not os.path.exists(self.marker):
                import ray

                Path(self.marker).touch()
                ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
                time.sleep(60)  # dies here, mid-batch
            return original(pipe, *args, **kwargs)

        type(pipes[0]).__call__ = sample  # this actor's process only
        return pipes


@pytest.mark.slow
def test_generate_on_ray_equals_one_process_after_a_killed_actor_and_resumes(
    ray, sd_dir, plain_weights, tmp_path, one_process, capsys
):
    from anodiff.cli import main
    from anodiff.generate.job import GenerateJob
    from anodiff.generate.run import generate
    from anodiff.scale.generate import run_on_ray

    marker = tmp_path / "killed"

    def runner(job: GenerateJob, report):
        return run_on_ray(job, report, factory=KillOnce(job.factory, str(marker)), device="cpu", progress=False)

    report = generate(sd_dir, plain_weights, tmp_path / "out", COUNT, device="cpu", runner=runner, **KW)
    assert marker.exists(), "the actor was killed"
    assert report.indices == list(range(COUNT)) and report.written == COUNT  # each pair once, none duplicated
    assert files(tmp_path / "out") == one_process  # byte-identical, no temporary or half-written file left
    argv = [*generate_argv(sd_dir, plain_weights, tmp_path / "out"), "--ray"]
    assert main(argv) == 0
    assert f"wrote 0 pair(s), skipped {COUNT} already complete" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_driver_leaves_the_rest_pending_and_a_rerun_finishes_it(
    ray, sd_dir, plain_weights, tmp_path, one_process, monkeypatch
):
    import json

    from anodiff.generate.job import GenerateJob
    from anodiff.generate.run import generate
    from anodiff.scale.generate import ray_runner

    real_done, seen = GenerateJob.done, []

    def ctrl_c_after_one_batch(self, indices):
        real_done(self, indices)
        seen.append(indices)
        raise KeyboardInterrupt

    monkeypatch.setattr(GenerateJob, "done", ctrl_c_after_one_batch)
    run = ray_runner(device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        generate(sd_dir, plain_weights, tmp_path, COUNT, device="cpu", runner=run, **KW)
    record = json.loads((tmp_path / "object" / ".anodiff-generate-defect.json").read_text())
    assert len(seen) == 1 and set(record["pending"]) == set(range(COUNT)) - set(seen[0])
    monkeypatch.setattr(GenerateJob, "done", real_done)
    again = generate(sd_dir, plain_weights, tmp_path, COUNT, device="cpu", runner=run, **KW)
    assert again.skipped >= len(seen[0]) and again.written + again.skipped == COUNT
    assert files(tmp_path) == one_process


@pytest.mark.slow
def test_a_second_driver_joins_the_cluster_by_its_address(ray, sd_dir, plain_weights, tmp_path, one_process):
    """``anodiff generate --ray HOST:PORT`` from another process: the pairs of the one-process run."""
    import subprocess

    address = ray.get_runtime_context().gcs_address
    argv = [*generate_argv(sd_dir, plain_weights, tmp_path), "--ray", address]
    done = subprocess.run(
        [sys.executable, "-m", "anodiff.cli", *argv], cwd=ROOT, check=False, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {COUNT} pair(s)" in done.stdout
    assert files(tmp_path) == one_process


@dataclass(frozen=True)
class DieOnce:
    """A ``train`` whose worker process dies (``os._exit``) after step 3 of the first attempt; every attempt logs
    its ``resume`` flag and the step it starts from to ``log``."""

    marker: str
    log: str

    def __call__(self, config):
        from anodiff.train.trainer import Trainer, train

        original, first = Trainer.train_step, []

        def step(trainer):
            if not first:
                first.append(trainer.step)
                with open(self.log, "a") as fh:
                    fh.write(f"{config.resume} {trainer.step}\n")
            loss = original(trainer)
            if trainer.step == 3 and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os._exit(1)
            return loss

        Trainer.train_step = step
        return train(config)


@pytest.mark.slow
def test_train_all_on_ray_retries_a_killed_task_from_its_checkpoint_to_the_same_weights(ray, base, tmp_path, capsys):
    from test_train import config, mvtec_root

    from anodiff.cli import main
    from anodiff.scale.train import MARKER, train_all_on_ray
    from anodiff.train.trainer import train

    root = mvtec_root(tmp_path, ("crack",))
    kw = {"category": "bottle", "anomaly": "crack", "steps": 4, "checkpoint_every": 2, "progress": False}
    reference = load_file(train(config(base, root, tmp_path / "uninterrupted", **kw)))
    job = config(base, root, tmp_path / "runs" / "bottle" / "crack", **kw)
    rows, interrupted = train_all_on_ray(
        ray, [job], device="cpu", train_fn=DieOnce(str(tmp_path / "died"), str(tmp_path / "log"))
    )
    assert (tmp_path / "died").exists() and not interrupted
    assert (tmp_path / "log").read_text().splitlines() == ["False 0", "True 2"]  # retried from the step-2 checkpoint
    assert [(r.anomaly, r.status) for r in rows] == [("crack", "trained")]
    final = load_file(rows[0].path)
    assert final.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-6, msg=key)
    assert not (Path(job.output) / MARKER).exists()
    argv = [
        "train",
        "--all",
        "--ray",
        "--base",
        str(base),
        "--data",
        str(root),
        "--output",
        str(tmp_path / "runs"),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--resolution",
        "32",
        "--rank",
        "4",
        "--text-rank",
        "2",
    ]
    assert main(argv) == 0
    assert "bottle/crack" in (out := capsys.readouterr().out) and "skipped (done)" in out


@dataclass(frozen=True)
class BadData:
    """A ``train`` that fails as bad data does (a ``ValueError``), logging each attempt."""

    log: str

    def __call__(self, config):
        with open(self.log, "a") as fh:
            fh.write("attempt\n")
        raise ValueError(f"{config.anomaly}: no usable pair")


def test_a_job_whose_data_fails_is_reported_failed_and_not_retried(ray, tmp_path):
    from test_train import config

    from anodiff.scale.train import train_all_on_ray

    done = tmp_path / "hole" / "bottle_hole.safetensors"
    done.parent.mkdir()
    done.write_bytes(b"finished earlier")
    jobs = [config("base", "data", tmp_path / a, category="bottle", anomaly=a) for a in ("crack", "hole")]
    rows, interrupted = train_all_on_ray(ray, jobs, device="cpu", train_fn=BadData(str(tmp_path / "log")))
    assert [(r.anomaly, r.status) for r in rows] == [
        ("crack", "failed: crack: no usable pair"),
        ("hole", "skipped (done)"),
    ]
    assert (tmp_path / "log").read_text() == "attempt\n" and not interrupted


def test_the_output_folder_must_be_visible_from_every_node(ray, tmp_path, monkeypatch):
    from anodiff.scale import cluster

    cluster.check_shared_folder(ray, tmp_path / "shared")
    assert (tmp_path / "shared").is_dir() and not list((tmp_path / "shared").iterdir())  # the probe is gone
    monkeypatch.setattr(cluster, "write_probe", lambda path, token: None)  # as if the driver wrote to its own disk
    with pytest.raises(cluster.ClusterError, match="not visible from Ray node"):
        cluster.check_shared_folder(ray, tmp_path / "local")
    assert not (tmp_path / "local").exists()


def test_cuda_on_a_cluster_without_gpus_is_a_one_line_error_and_writes_nothing(
    ray, sd_dir, plain_weights, tmp_path, capsys
):
    from anodiff.cli import main

    argv = [
        "generate",
        "--base",
        str(sd_dir),
        "--weights",
        str(plain_weights),
        "--out",
        str(tmp_path / "out"),
        "--count",
        "2",
        "--ray",
        "--device",
        "cuda",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "the Ray cluster has no GPU" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_graft_on_ray_makes_the_one_process_files_and_resumes(ray, base, tmp_path, capsys):
    """The training-free mode on the same runner: ``anodiff graft --ray`` writes the bytes ``anodiff graft`` writes
    (references rotating, painted targets), and a second run skips every pair."""
    from graft_fixtures import rect, reference_pair, textured

    from anodiff.cli import main
    from anodiff.common.imageio import write_png

    src = tmp_path / "in"
    (src / "normal").mkdir(parents=True)
    (src / "masks").mkdir()
    for k in range(2):
        image, mask = reference_pair(48)
        write_png(src / f"ref{k}.png", image)
        write_png(src / f"ref{k}_mask.png", (mask * 255).astype("uint8"))
        write_png(src / "normal" / f"n{k}.png", textured(10 + k, 96))
        write_png(src / "masks" / f"n{k}.png", (rect(96, 30, 50, 20, 44) * 255).astype("uint8"))
    argv = [
        "graft",
        "--base",
        str(base),
        "--reference",
        str(src / "ref0.png"),
        str(src / "ref1.png"),
        "--reference-mask",
        str(src / "ref0_mask.png"),
        str(src / "ref1_mask.png"),
        "--normal",
        str(src / "normal"),
        "--masks",
        str(src / "masks"),
        "--count",
        "3",
        "--steps",
        "2",
        "--optimise-steps",
        "1",
        "--size",
        "64",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    one, on_ray = (graft_files(tmp_path / name) for name in ("one", "ray"))
    assert on_ray == one
    assert sum(k.endswith(".png") for k in one) == 9  # image, mask and part of 3 pairs
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    assert "wrote 0 pair(s), skipped 3" in capsys.readouterr().out


def graft_files(root: Path) -> dict[str, object]:
    """``files`` of a graft tree: sidecars read without their timings, the per-reference embedding cache left out."""
    import json

    out: dict[str, object] = {}
    for name, data in files(root).items():
        if ".anodiff-graft-embeddings" in name:
            continue
        out[name] = {k: v for k, v in json.loads(data).items() if k != "seconds"} if name.endswith(".json") else data
    return out
