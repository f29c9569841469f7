"""``--ray`` mistakes that need no cluster (Ray missing, an address nobody answers at), and Ray staying an optional
extra: the plain command line and the ComfyUI nodes never import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_install import node_imports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ray_running():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()


def generate_argv(out: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--base",
        str(out / "base"),
        "--weights",
        str(out / "w.safetensors"),
        "--out",
        str(out),
        "--count",
        "2",
        *extra,
    ]


def test_ray_without_ray_installed_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from anodiff.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    for argv in (
        generate_argv(tmp_path / "gen", "--ray"),
        ["train", "--all", "--ray", "--base", "b", "--data", str(tmp_path), "--output", str(tmp_path / "t")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith('--ray needs Ray, which is not installed: pip install "dualanodiff[ray]"'), err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "gen").exists() and not (tmp_path / "t").exists()


def test_an_unreachable_address_fails_fast_with_a_one_line_error(tmp_path, capsys, no_ray_running):
    from anodiff.cli import main

    assert main(generate_argv(tmp_path / "gen", "--ray", "127.0.0.1:1")) == 2
    err = capsys.readouterr().err.strip()
    assert "--ray 127.0.0.1:1: no Ray head answers there" in err and len(err.splitlines()) == 1
    assert main(generate_argv(tmp_path / "gen", "--ray", "nonsense")) == 2
    assert "expected auto, HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()


def test_ray_and_shard_or_ray_without_all_are_refused(tmp_path, capsys):
    from anodiff.cli import main

    assert main(generate_argv(tmp_path / "gen", "--ray", "--shard", "0/2")) == 2
    assert "--shard and --ray exclude each other" in capsys.readouterr().err
    assert main(["train", "--ray", "--base", "b", "--data", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
    assert "add --all" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists() and not (tmp_path / "t").exists()


def test_the_command_line_and_the_nodes_never_import_ray():
    code = (
        "import sys, anodiff, anodiff.cli, anodiff.cli.generate, anodiff.cli.train, anodiff.generate.run; "
        "anodiff.cli.build_parser(); print('ray' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    assert "ray" not in node_imports()  # every module the nodes reach, lazily imported ones too
