"""Every bundled UI workflow, opened and queued in ComfyUI's real web frontend (headless Chromium via Playwright).

What users hit when they open a shared workflow: an unknown node type, a broken link, widget values in the wrong
order (caught by the server's validation when the page queues the graph). The test loads each file through the
page, checks the graph, swaps the checkpoint loader for the tiny test model and cuts sizes and steps down through
the page's own widgets, queues it from the page and waits until every output node shows its images. One
screenshot per workflow goes to ``$ANODIFF_ARTIFACTS`` (default ``.cache/artifacts/browser``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pack import REPO_ROOT
from test_e2e import need_u2netp
from test_multi_defect_workflow import write_photo
from test_train_e2e import write_defect_folder

pytestmark = pytest.mark.slow

WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
ARTIFACTS = Path(os.environ.get("ANODIFF_ARTIFACTS", REPO_ROOT / ".cache" / "artifacts" / "browser"))
IMAGE, DEFECTS, SIZE = "normal_browser.png", "defects_browser", 64
RUN_TIMEOUT = 240.0

OVERRIDES: dict[str, dict[str, Any]] = {
    "EmptyLatentImage": {"width": SIZE, "height": SIZE, "batch_size": 2},
    "ImageScale": {"width": SIZE, "height": SIZE},
    "LoadImage": {"image": IMAGE},
    "DualAnoDiffSampler": {"steps": 2},
    "KSampler": {"steps": 2},
    "KSamplerAdvanced": {"steps": 2, "end_at_step": 2},
    "DualAnoDiffExtractMask": {"method": "grey distance", "threshold": 0.0},
    "DualAnoDiffCropRegion": {"working_size": SIZE},
    "DualAnoDiffRegionLatent": {"batch_size": 1},
    "DualAnoDiffRandomRegion": {"min_size": 0.1, "max_size": 0.15, "seed": 3},
    "DualAnoDiffLoadTrainingSet": {"folder": DEFECTS, "category": "", "anomaly": "", "resolution": SIZE},
    "DualAnoDiffTrain": {"steps": 3, "rank": 4, "batch_size": 2, "resolution": SIZE, "preview_every": 2},
    "DualAnoDiffOneShotDefect": {"steps": 2, "optimise_steps": 2},
    "DualAnoDiffFilterPairs": {"max_area": 1.0, "min_foreground": 0.0, "min_agreement": 0.0},
}
"""Widget values per node type that make a bundled graph run on the tiny model in seconds (set by widget name)."""

TINIFY_JS = """({overrides, loras, bcmLora}) => {
  const app = window.app ?? window.comfyAPI.app.app;
  const graph = app.graph, LG = window.LiteGraph;
  const nodes = () => [...(graph._nodes ?? graph.nodes)];
  const link = (id) => graph.links instanceof Map ? graph.links.get(id) : graph.links[id];
  for (const ckpt of nodes().filter(n => n.type === 'CheckpointLoaderSimple')) {
    const tiny = LG.createNode('TinySD15Loader');
    tiny.pos = [...ckpt.pos];
    graph.add(tiny);
    ckpt.outputs.forEach((out, i) => {
      for (const id of [...(out.links ?? [])]) {
        const l = link(id);
        tiny.connect(i, graph.getNodeById(l.target_id), l.target_slot);
      }
    });
    graph.remove(ckpt);
  }
  const bcm = nodes().some(n => n.type === 'DualAnoDiffBackgroundCompensation');
  let nextLora = 0;
  for (const node of nodes().sort((a, b) => a.id - b.id)) {
    for (const w of node.widgets ?? []) {
      const value = (overrides[node.type] ?? {})[w.name];
      if (value !== undefined) w.value = value;
    }
    const lora = (node.widgets ?? []).find(w => w.name === 'lora_name');
    if (lora && node.type === 'DualAnoDiffLoadLoRA') lora.value = bcm ? bcmLora : loras[nextLora++ % loras.length];
  }
  graph.setDirtyCanvas(true, true);
  return nodes().filter(n => n.mode === 0 && ['SaveImage', 'PreviewImage'].includes(n.type)).map(n => n.id);
}"""

IMAGES_SHOWN_JS = """(ids) => {
  const app = window.app ?? window.comfyAPI.app.app;
  const shown = (id) => (app.nodeOutputs?.[String(id)]?.images?.length ?? 0) > 0
      || (app.graph.getNodeById(id)?.imgs?.length ?? 0) > 0;
  return ids.every(shown);
}"""


def write_masked_photo(path: Path) -> None:
    """The part photo with a painted ellipse on the object as its alpha (LoadImage's MASK: 1 where transparent),
    so the one-shot workflow's reference and target masks are drawn as a user paints them in the mask editor."""
    from PIL import Image

    rgb = write_photo(path)
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.where(((yy - h / 2) / (0.1 * h)) ** 2 + ((xx - w / 2) / (0.15 * w)) ** 2 < 1, 0, 255)
    Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)])).save(path)


@pytest.fixture(scope="module")
def frontend(comfyui_root):
    """A ComfyUI server with the real frontend, this pack, tiny weight files, a photo and a defect folder."""
    from browser import find_chromium, frontend_server
    from dual_files import write_dual_weights

    try:
        find_chromium()
        import playwright  # noqa: F401
    except (RuntimeError, ImportError) as err:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium and Playwright under CI: {err}", pytrace=False)
        pytest.skip(f"no browser: {err}")
    with frontend_server({"dualanodiff": REPO_ROOT}, sys.executable, comfyui_root, 180.0) as server:
        models = server.base_dir / "models" / "dualanodiff"
        for name, seed in (("tiny_a.safetensors", 1), ("tiny_b.safetensors", 2)):
            write_dual_weights(models / name, seed=seed)
        write_dual_weights(models / "tiny_bcm.safetensors", bcm=True)
        write_masked_photo(server.base_dir / "input" / IMAGE)
        write_defect_folder(server.base_dir / "input" / DEFECTS, n=6)
        yield server


@pytest.fixture(scope="module")
def page(frontend):
    from browser import comfy_page

    with comfy_page(frontend.url, probe="DualAnoDiffSampler") as view:
        yield view


def wait_for_run(server: Any, view: Any, answers_before: int, outputs: list[int]) -> dict[str, Any]:
    """The /prompt answer of this queue, then its history entry; fail fast with the server's error."""
    deadline = time.monotonic() + 30
    while len(view.prompt_answers) <= answers_before and time.monotonic() < deadline:
        view.page.wait_for_timeout(200)
    assert len(view.prompt_answers) > answers_before, f"the page queued nothing; page errors: {view.errors[-5:]}"
    answer = view.prompt_answers[-1]
    assert answer["status"] == 200 and not answer.get("node_errors"), json.dumps(answer)[:3000]
    entry = server.wait(answer["prompt_id"], timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    view.page.wait_for_function(IMAGES_SHOWN_JS, arg=outputs, timeout=30_000, polling=250)
    return entry


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem.removeprefix("dualanodiff_") for p in WORKFLOWS])
def test_a_bundled_workflow_opens_and_runs_in_the_browser(frontend, page, path):
    need_u2netp()  # regions and BCM find the object with U²-Net-P
    problems = page.load(json.loads(path.read_text()), path.name)
    assert problems["missing"] == [], f"unknown node types: {problems['missing']}"
    assert problems["broken"] == [], f"broken links: {problems['broken']}"
    assert not [d for d in problems["dialogs"] if "missing" in d.lower() and "node" in d.lower()], problems
    outputs = page.page.evaluate(
        TINIFY_JS,
        {
            "overrides": OVERRIDES,
            "loras": ["tiny_a.safetensors", "tiny_b.safetensors"],
            "bcmLora": "tiny_bcm.safetensors",
        },
    )
    assert outputs, "the workflow has no output image node"
    before = len(page.prompt_answers)
    page.page.evaluate(
        "async () => { const app = window.app ?? window.comfyAPI.app.app; await app.queuePrompt(0, 1); }"
    )
    entry = wait_for_run(frontend, page, before, outputs)
    assert frontend.output_files(entry) or any(o.get("images") for o in entry["outputs"].values())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / f"{path.stem}.png"))


def test_a_missing_model_file_gets_comfyuis_message_not_a_traceback(frontend, page):
    """Bad input in the browser path: a Dual LoRA file that is not there is a validation error naming the value."""
    path = REPO_ROOT / "example_workflows" / "dualanodiff_generate_pairs.json"
    page.load(json.loads(path.read_text()), path.name)
    page.page.evaluate(
        TINIFY_JS, {"overrides": OVERRIDES, "loras": ["absent.safetensors"], "bcmLora": "absent.safetensors"}
    )
    before = len(page.prompt_answers)
    page.page.evaluate(
        "async () => { const app = window.app ?? window.comfyAPI.app.app; await app.queuePrompt(0, 1); }"
    )
    deadline = time.monotonic() + 30
    while len(page.prompt_answers) <= before and time.monotonic() < deadline:
        page.page.wait_for_timeout(200)
    answer = page.prompt_answers[-1]
    text = json.dumps(answer)
    assert answer["status"] == 400 and "absent.safetensors" in text, text[:2000]
    (error,) = answer["node_errors"].values()
    assert (
        error["class_type"] == "DualAnoDiffLoadLoRA" and error["errors"][0]["extra_info"]["input_name"] == "lora_name"
    )
    assert "Traceback" not in text
