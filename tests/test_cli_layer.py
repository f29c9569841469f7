"""The command line is one layer: argparse only under ``anodiff/cli/``, every command listed, ``train``'s flags
exactly ``TrainConfig``'s fields."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from anodiff.cli import build_parser
from anodiff.cli.train import COMMAND_ONLY, train_config
from anodiff.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("convert", "fetch-models", "train", "generate", "graft", "eval", "demo", "filter", "export", "info")


def imports_argparse(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
            return True
    return False


def test_argparse_is_imported_only_by_the_cli_package():
    files = [p for folder in ("anodiff", "nodes") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 20
    cli = ROOT / "anodiff" / "cli"
    outside = [p.relative_to(ROOT).as_posix() for p in files if imports_argparse(p) and cli not in p.parents]
    assert outside == []
    assert imports_argparse(cli / "__init__.py")


def test_python_m_anodiff_cli_help_lists_every_command():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "anodiff.cli", "--help"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = done.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert tuple(listed) == COMMANDS


def train_parser():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["train"]


def test_every_train_flag_is_a_train_config_field():
    names = {f.name for f in fields(TrainConfig)}
    dests = {a.dest for a in train_parser()._actions if a.dest != "help"}
    assert dests - names == set(COMMAND_ONLY)
    # the fields without a flag are the programmatic ones (the ComfyUI node and the tests set them)
    assert names - dests == {"weight_decay", "max_grad_norm", "cache_latents", "progress"}


def test_unset_train_flags_keep_the_train_config_defaults():
    args = build_parser().parse_args(["train", "--base", "b", "--data", "d", "--out", "o"])
    assert train_config(args) == TrainConfig(base="b", data="d", output="o")


def test_a_full_train_command_line_is_the_train_config_built_directly():
    argv = [
        "train",
        "--base",
        "b",
        "--data",
        "d",
        "--output",
        "o",
        "--category",
        "bottle",
        "--anomaly",
        "crack",
        "--name",
        "n",
        "--steps",
        "7",
        "--batch-size",
        "3",
        "--lr",
        "0.5",
        "--rank",
        "5",
        "--text-rank",
        "6",
        "--no-text-encoder",
        "--no-saim",
        "--saim-zero-init",
        "--bcm",
        "--resolution",
        "64",
        "--no-flips",
        "--split",
        "authors",
        "--prompt-global",
        "pg",
        "--prompt-anomaly",
        "pa",
        "--seed",
        "9",
        "--mixed-precision",
        "bf16",
        "--gradient-checkpointing",
        "--adam8bit",
        "off",
        "--checkpoint-every",
        "2",
        "--preview-every",
        "4",
        "--resume",
        "--force",
    ]
    expected = TrainConfig(
        base="b",
        data="d",
        output="o",
        category="bottle",
        anomaly="crack",
        name="n",
        steps=7,
        batch_size=3,
        lr=0.5,
        rank=5,
        text_rank=6,
        train_text_encoder=False,
        saim=False,
        saim_zero_init=True,
        bcm=True,
        resolution=64,
        flips=False,
        split="authors",
        prompt_global="pg",
        prompt_anomaly="pa",
        seed=9,
        mixed_precision="bf16",
        gradient_checkpointing=True,
        adam8bit="off",
        checkpoint_every=2,
        preview_every=4,
        resume=True,
        force=True,
    )
    assert train_config(build_parser().parse_args(argv)) == expected
    overridden = train_config(build_parser().parse_args(argv), category="cable", output="x")
    assert (overridden.category, overridden.output, overridden.steps) == ("cable", "x", 7)


def test_fetch_models_into_a_read_only_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from anodiff.cli import main
    from anodiff.common import assets

    def refuse(target_dir, **kwargs):
        raise PermissionError(13, "Permission denied", str(target_dir))

    monkeypatch.setattr(assets, "install_u2netp", refuse)
    assert main(["fetch-models", "--dir", str(tmp_path / "site-packages" / "models")]) == 2
    err = capsys.readouterr().err
    assert "anodiff fetch-models: error: cannot write to" in err and "--dir DIR" in err and "Traceback" not in err
