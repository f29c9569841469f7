"""Registry-ready: ``[tool.comfy]`` has what the Comfy Registry and ComfyUI-Manager read, and comfy-cli's own
``comfy node validate`` passes without a warning (it only warns about bad classifiers or versions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
RAW = "https://raw.githubusercontent.com/dualanodiff/dualanodiff/main/"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_tool_comfy_is_complete_and_its_pictures_exist():
    data = pyproject()
    comfy, project = data["tool"]["comfy"], data["project"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"] == ">=0.3.75", "the oldest ComfyUI the tests run on"
    for field in ("Icon", "Banner"):
        assert comfy[field].startswith(RAW), field
        assert (ROOT / comfy[field].removeprefix(RAW)).is_file(), f"{field} points at a file not in the repository"
    classifiers = project["classifiers"]
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert any(c.startswith("Environment :: GPU :: ") for c in classifiers)
    assert {"Homepage", "Repository", "Issues"} <= set(project["urls"])
    assert project["license"] == {"file": "LICENSE"} and (ROOT / "LICENSE").is_file()


@pytest.mark.skipif(not shutil.which("comfy", path=str(Path(sys.executable).parent)), reason="comfy-cli not installed")
def test_comfy_node_validate_passes_without_warnings():
    comfy = shutil.which("comfy", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "passed" in out and "warning" not in out.lower(), out[-3000:]
