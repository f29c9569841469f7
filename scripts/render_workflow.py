#!/usr/bin/env python3
"""Render a UI-format ComfyUI workflow to a PNG exactly as ComfyUI's own frontend draws it.

Docs tool (README pictures), not part of the test suite::

    .venv-comfy/bin/python scripts/render_workflow.py \\
        example_workflows/dualanodiff_generate_pairs.json docs/workflow_generate_pairs.png [--width 1600 --height 1000]

What it does: starts a CPU ComfyUI server on a free loopback port with this repository linked in as
``custom_nodes/dualanodiff`` (through ``tests/comfy/server.py``'s ``comfy_server``, but serving the real
web UI from ``comfyui-frontend-package`` instead of an empty folder), opens the UI in headless Chromium,
loads the workflow with ``app.loadGraphData``, hides the menus and side bars, fits the view to the graph,
takes a screenshot, and stops Chromium and the server again (also on errors and Ctrl-C). Nothing is
executed; missing checkpoint / LoRA files do not matter (the missing-model dialogs are switched off).

Prerequisites:

* ``pip install playwright`` (the ``test`` extra has it) and ``apt-get install -y chromium`` (Debian's package,
  ``/usr/bin/chromium``; ``--chromium PATH`` or ``$CHROMIUM`` for another Chrome/Chromium build). The script exits
  with status 2 and says so when no browser is found.
* An interpreter with ComfyUI's requirements, including ``comfyui-frontend-package`` (the web UI) and
  ``pillow`` (used to shrink the PNG): run the script with it (as above) or name it with ``--python``.
* The ComfyUI source, found like the tests find it: ``$ANODIFF_COMFYUI`` or ``.cache/comfyui``
  (``scripts/fetch_assets.py`` puts it there); ``--comfyui PATH`` overrides both.

Chromium is driven by Playwright (``pip install playwright``; no Playwright browser download: it launches the
Chromium above with ``executable_path``), through ``tests/comfy/browser.py``, the harness the browser tests use.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "comfy"))
from browser import BrowserError, comfy_page, frontend_server, post_json  # tests/comfy/browser.py

PACK_NAME = "dualanodiff"
MAX_PNG_BYTES = 400_000

RENDER_SETTINGS: dict[str, Any] = {
    # No dialogs about the (absent) checkpoint / LoRA files: a picture, not a test.
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Validation.Workflows": False,
}
"""Added to ``browser.UI_SETTINGS`` for the throw-away user before the page opens."""

HIDE_CHROME_CSS = """
.side-tool-bar-container, .comfyui-body-top, .comfyui-body-left, .comfyui-body-right, .comfyui-body-bottom,
.comfyui-menu, .actionbar, .actionbar-container, .workflow-tabs-container, .p-toast, .bottom-panel,
.graph-canvas-panel > :not(canvas), .selection-toolbox, .comfy-menu-hamburger, .subgraph-breadcrumb {
  display: none !important;
}
"""
"""Menus, side/tool bars, tabs, breadcrumb and toasts around the canvas; hidden before the canvas is resized to fill
the window."""

LOAD_AND_FIT_JS = """
async ({css, workflow, name, padding, max_zoom}) => {
  const app = window.app ?? window.comfyAPI.app.app;
  const style = document.createElement('style');
  style.textContent = css;
  document.head.appendChild(style);
  await app.loadGraphData(workflow, true, false, name);
  await new Promise(r => setTimeout(r, 500));
  document.querySelectorAll('.p-dialog-mask .p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click());
  window.dispatchEvent(new Event('resize'));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const canvas = app.canvas;
  const nodes = app.graph._nodes ?? app.graph.nodes;
  const groups = app.graph._groups ?? app.graph.groups ?? [];
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  const grow = (x, y, w, h) => {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  };
  for (const node of nodes) {
    const b = node.boundingRect ?? node.getBounding();
    grow(b[0], b[1], b[2], b[3]);
  }
  for (const group of groups) {
    const b = group._bounding ?? group.boundingRect;
    if (b) grow(b[0], b[1], b[2], b[3]);
  }
  const el = canvas.canvas;
  const ratio = (window.devicePixelRatio || 1);
  const viewW = el.width / ratio, viewH = el.height / ratio;
  const pad = padding;
  const scale = Math.min((viewW - 2 * pad) / (x1 - x0), (viewH - 2 * pad) / (y1 - y0), max_zoom);
  canvas.ds.scale = scale;
  canvas.ds.offset[0] = (viewW / scale - (x1 - x0)) / 2 - x0;
  canvas.ds.offset[1] = (viewH / scale - (y1 - y0)) / 2 - y0;
  canvas.deselectAll?.();
  canvas.setDirty(true, true);
  canvas.draw(true, true);
  await new Promise(r => setTimeout(r, 500));
  canvas.setDirty(true, true);
  canvas.draw(true, true);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const rect = el.getBoundingClientRect();
  const left = Math.max(0, rect.left + (x0 + canvas.ds.offset[0]) * scale - pad);
  const top = Math.max(0, rect.top + (y0 + canvas.ds.offset[1]) * scale - pad);
  const right = Math.min(window.innerWidth, rect.left + (x1 + canvas.ds.offset[0]) * scale + pad);
  const bottom = Math.min(window.innerHeight, rect.top + (y1 + canvas.ds.offset[1]) * scale + pad);
  return {nodes: nodes.length, scale, bounds: [x0, y0, x1, y1], view: [viewW, viewH],
          clip: {
            x: Math.floor(left), y: Math.floor(top),
            width: Math.ceil(right - left), height: Math.ceil(bottom - top),
          },
          dialogs: document.querySelectorAll('.p-dialog').length};
}
"""


def shrink_png(data: bytes, limit: int) -> tuple[bytes, str]:
    """Re-encode the screenshot optimised, palette-quantised if it is still over ``limit`` bytes."""
    try:
        from PIL import Image
    except ImportError:
        return data, "pillow missing: PNG written as Chromium made it"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    how = "optimised"
    if out.tell() > limit:
        out = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, "PNG", optimize=True
        )
        how = "quantised to 256 colours"
    return out.getvalue(), how


def render(args: argparse.Namespace) -> None:
    """Start server and browser, render ``args.workflow`` to ``args.output``, stop both."""
    workflow_path = Path(args.workflow)
    workflow = json.loads(workflow_path.read_text())
    if "nodes" not in workflow:
        raise BrowserError(
            f"{workflow_path} is not a UI-format workflow (no 'nodes'); API-format graphs have no layout"
        )
    probe = next(
        (node["type"] for node in workflow["nodes"] if str(node.get("type", "")).startswith("DualAnoDiff")),
        "KSampler",
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"[render_workflow] starting ComfyUI ({args.python})", file=sys.stderr)
    with frontend_server({PACK_NAME: REPO_ROOT}, args.python, args.comfyui, args.timeout) as server:
        post_json(server.url + "/settings", RENDER_SETTINGS)
        view_size = {"width": args.width, "height": args.height}
        with comfy_page(server.url, chromium=args.chromium, probe=probe, timeout=args.timeout, **view_size) as view:
            fit = {"css": HIDE_CHROME_CSS, "workflow": workflow, "name": workflow_path.name}
            info = view.page.evaluate(LOAD_AND_FIT_JS, {**fit, "padding": args.padding, "max_zoom": args.max_zoom})
            print(f"[render_workflow] graph: {json.dumps(info)}", file=sys.stderr)
            clip = None if args.no_crop else info["clip"]
            shot = view.page.screenshot(clip=clip, timeout=args.timeout * 1000)
    data, how = shrink_png(shot, MAX_PNG_BYTES)
    output.write_bytes(data)
    print(f"[render_workflow] wrote {output} ({len(data) // 1024} KiB, {how})", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "workflow", help="UI-format workflow JSON (e.g. example_workflows/dualanodiff_generate_pairs.json)"
    )
    parser.add_argument("output", help="PNG to write (e.g. docs/workflow_generate_pairs.png)")
    parser.add_argument("--width", type=int, default=1600, help="viewport width in pixels (default 1600)")
    parser.add_argument("--height", type=int, default=1000, help="viewport height in pixels (default 1000)")
    parser.add_argument("--padding", type=int, default=24, help="margin around the graph in pixels (default 24)")
    parser.add_argument(
        "--no-crop", action="store_true", help="keep the whole viewport, not just the graph and its margin"
    )
    parser.add_argument("--max-zoom", type=float, default=1.5, help="never zoom in further than this (default 1.5)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with ComfyUI's requirements (default: this one)"
    )
    parser.add_argument(
        "--comfyui", type=Path, default=None, help="ComfyUI source folder (default: $ANODIFF_COMFYUI or .cache/comfyui)"
    )
    parser.add_argument(
        "--chromium", default=None, help="Chrome/Chromium executable (default: $CHROMIUM or `chromium` on PATH)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds allowed for server start and page load (default 180)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        render(args)
    except RuntimeError as err:  # BrowserError, or ComfyServerError from tests/comfy/server.py (log printed above)
        print(f"render_workflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
