"""Installing the pack into a user's ComfyUI: requirements.txt holds only what the nodes import, and install.py
leaves an existing onnxruntime-gpu / OpenCV distribution alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_PROVIDES = {
    "yaml",  # pyyaml, in ComfyUI's own requirements.txt: the folder config of Load Photo Folder / Load Defect Set
    "torch",
    "numpy",
    "PIL",
    "tqdm",  # in ComfyUI's own requirements.txt (0.3.75 and 0.33.0): its progress bars
    "filelock",  # a dependency of torch, so in every ComfyUI: anodiff.common.jobs' single-host locks
    "comfy",
    "comfy_execution",
    "folder_paths",
    "latent_preview",
    "node_helpers",
}
INSTALL_PY_PROVIDES = {"onnxruntime": "onnxruntime", "cv2": "opencv"}
IMPORT_TO_REQUIREMENT = {
    "safetensors": "safetensors",
    "einops": "einops",
    "numpy": "numpy",
    "pycocotools": "pycocotools",
}


def requirement_names() -> set[str]:
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    return {re.split(r"[<>=!~\[; ]", line)[0].lower() for line in lines if line}


def node_imports() -> set[str]:
    """Top-level modules imported (at load or lazily) by nodes/ and the anodiff modules it reaches."""
    todo, seen, modules = [ROOT / "nodes" / "__init__.py"], set(), set()
    todo += sorted((ROOT / "nodes").rglob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                parts = (node.module or "").split(".") if node.module else []
                target = base.joinpath(*parts)
                todo += [target.with_suffix(".py"), target / "__init__.py"]
                todo += [target / f"{alias.name}.py" for alias in node.names]
    return {m for m in modules if m not in sys.stdlib_module_names and m != "__future__"}


def test_requirements_list_only_what_the_nodes_import():
    names = requirement_names()
    assert not names & {"diffusers", "peft", "transformers", "accelerate", "torch", "torchvision"}
    assert not any(n.startswith(("onnxruntime", "opencv")) for n in names)  # install.py's job, see below
    imports = node_imports()
    assert {"safetensors", "einops", "cv2", "onnxruntime", "torch"} <= imports  # the scan sees the pack
    uncovered = imports - COMFYUI_PROVIDES - set(INSTALL_PY_PROVIDES) - set(IMPORT_TO_REQUIREMENT)
    assert not uncovered, f"nodes import {sorted(uncovered)}, which requirements.txt does not list"
    needed = {IMPORT_TO_REQUIREMENT[m] for m in imports if m in IMPORT_TO_REQUIREMENT}
    assert needed - {"numpy"} <= names <= needed


def stub_distribution(site: Path, name: str, version: str = "1.20.0") -> None:
    """An installed distribution by name only (what pip and importlib.metadata see), no module."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def bare_venv(tmp_path):
    """A venv without pip, so any attempt of install.py to pip-install would fail loudly."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    return python, site


def run_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(ROOT / "install.py"), "--no-model", *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_existing_onnxruntime_gpu_and_opencv_are_left_alone(bare_venv):
    python, site = bare_venv
    stub_distribution(site, "onnxruntime-gpu")
    stub_distribution(site, "opencv-contrib-python", "4.10.0")
    done = run_install(python, "--strict")
    assert done.returncode == 0, done.stderr
    assert "installing neither" in done.stdout and "pip" not in done.stdout
    listed = sorted(p.name for p in site.glob("*.dist-info"))
    assert listed == ["onnxruntime_gpu-1.20.0.dist-info", "opencv_contrib_python-4.10.0.dist-info"]


def test_only_the_missing_family_is_installed(bare_venv):
    python, site = bare_venv
    stub_distribution(site, "onnxruntime-gpu")
    plan = run_install(python, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    command = plan.stdout.split("would run: ", 1)[1]
    assert "opencv-python-headless" in command and "onnxruntime" not in command
    stub_distribution(site, "opencv-python", "4.9.0")
    (site / "onnxruntime_gpu-1.20.0.dist-info").rename(site / "gone")
    plan = run_install(python, "--dry-run")
    assert (
        "onnxruntime>=1.17" in plan.stdout.split("would run: ", 1)[1]
        and "opencv" not in plan.stdout.split("would run: ", 1)[1]
    )
