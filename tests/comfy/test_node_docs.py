"""The node library's help: every node has a description, every input and output its help text, and a help page
``web/docs/<node id>.md`` (the frontend's custom-node docs convention) that is up to date and served by ComfyUI."""

from __future__ import annotations

import importlib.util
import re

import pytest
from pack import REPO_ROOT, import_pack

DOCS = REPO_ROOT / "web" / "docs"


@pytest.fixture(scope="module")
def node_classes(comfyui_root):
    return import_pack().nodes.NODE_CLASS_MAPPINGS


def _script():
    spec = importlib.util.spec_from_file_location("node_docs", REPO_ROOT / "scripts" / "node_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_node_input_and_output_has_help(node_classes):
    missing = []
    for node_id, cls in node_classes.items():
        if not str(getattr(cls, "DESCRIPTION", "")).strip():
            missing.append(f"{node_id}: description")
        for group in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(group, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(options.get("tooltip", "")).strip():
                    missing.append(f"{node_id}.{name}: tooltip")
        tips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ()
        if len(tips) != len(cls.RETURN_TYPES) or not all(str(t).strip() for t in tips):
            missing.append(f"{node_id}: OUTPUT_TOOLTIPS")
    assert missing == []


def test_help_pages_are_current_and_their_pictures_exist(node_classes):
    assert _script().main(["--check"]) == 0, "run: python scripts/node_docs.py"
    for node_id in node_classes:
        text = (DOCS / f"{node_id}.md").read_text()
        for picture in re.findall(r"\]\((img/[^)]+)\)", text):
            assert (DOCS / picture).is_file(), f"{node_id}.md shows {picture}, which is missing"


@pytest.mark.slow
def test_comfyui_serves_the_help_pages(pack_server):
    page = pack_server.get_bytes("/extensions/dualanodiff/docs/DualAnoDiffSampler.md").decode()
    assert page.startswith("# Dual Sampler") and "## Inputs" in page
    assert pack_server.get_bytes("/extensions/dualanodiff/docs/img/workflow_generate_pairs.png")[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_template_browser_lists_every_bundled_workflow(pack_server):
    """ComfyUI's workflow-templates route lists the UI workflows of ``example_workflows/`` under this pack (the API
    twins in ``example_workflows/api/`` stay out of it) and serves each file."""
    import json

    listed = json.loads(pack_server.get_bytes("/workflow_templates"))
    bundled = sorted(p.stem for p in (REPO_ROOT / "example_workflows").glob("*.json"))
    assert bundled and sorted(listed["dualanodiff"]) == bundled
    for name in bundled:
        served = json.loads(pack_server.get_bytes(f"/api/workflow_templates/dualanodiff/{name}.json"))
        assert served["nodes"], name
