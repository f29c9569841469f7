#!/usr/bin/env python3
"""Render a UI-format ComfyUI workflow to a PNG exactly as ComfyUI's own frontend draws it.

Docs tool (README pictures), not part of the test suite::

    .venv-comfy/bin/python scripts/render_workflow.py \\
        workflows/dualanodiff_generate_pairs.json docs/workflow_generate_pairs.png [--width 1600 --height 1000]

What it does: starts a CPU ComfyUI server on a free loopback port with this repository linked in as
``custom_nodes/dualanodiff`` (through ``tests/comfy/server.py``'s ``comfy_server``, but serving the real
web UI from ``comfyui-frontend-package`` instead of an empty folder), opens the UI in headless Chromium,
loads the workflow with ``app.loadGraphData``, hides the menus and side bars, fits the view to the graph,
takes a screenshot, and stops Chromium and the server again (also on errors and Ctrl-C). Nothing is
executed; missing checkpoint / LoRA files do not matter (the missing-model dialogs are switched off).

Prerequisites:

* ``apt-get install -y chromium`` (Debian's package, ``/usr/bin/chromium``; ``--chromium PATH`` or
  ``$CHROMIUM`` for another Chrome/Chromium build). The script exits with status 2 and says so when no
  browser is found.
* An interpreter with ComfyUI's requirements, including ``comfyui-frontend-package`` (the web UI) and
  ``pillow`` (used to shrink the PNG): run the script with it (as above) or name it with ``--python``.
* The ComfyUI source, found like the tests find it: ``$ANODIFF_COMFYUI`` or ``.cache/comfyui``
  (``scripts/fetch_assets.py`` puts it there); ``--comfyui PATH`` overrides both.

No Node.js, Playwright or websocket library is needed: Chromium is driven over the DevTools protocol on
a pair of pipes (``--remote-debugging-pipe``), using only the standard library.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "dualanodiff"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
MAX_PNG_BYTES = 400_000

UI_SETTINGS: dict[str, Any] = {
    # No first-run template browser, no dialogs about the (absent) checkpoint / LoRA files.
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Validation.Workflows": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Toast.DisableReconnectingToast": True,
    # Only the canvas: no minimap, no zoom controls, no FPS/info corner, no restored old view.
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.EnableWorkflowViewRestore": False,
    "Comfy.Workflow.Persist": False,
    "Comfy.Window.UnloadConfirmation": False,
    "Comfy.ColorPalette": "dark",
    "Comfy.Locale": "en",
}
"""Written to the throw-away user's ``comfy.settings.json`` (``POST /settings``) before the page opens."""

HIDE_CHROME_CSS = """
.side-tool-bar-container, .comfyui-body-top, .comfyui-body-left, .comfyui-body-right, .comfyui-body-bottom,
.comfyui-menu, .actionbar, .actionbar-container, .workflow-tabs-container, .p-toast, .bottom-panel,
.graph-canvas-panel > :not(canvas), .selection-toolbox, .comfy-menu-hamburger, .subgraph-breadcrumb {
  display: none !important;
}
"""
"""Menus, side/tool bars, tabs, breadcrumb and toasts around the canvas; hidden before the canvas is resized to fill the window."""

BEFORE_PAGE_JS = "localStorage.setItem('vueNodesBannerDismissed', 'true');"
"""Runs before the app: no "Introducing Nodes 2.0" banner (the frontend keeps its dismissal in localStorage)."""

WAIT_FOR_APP_JS = """
new Promise((resolve, reject) => {
  const deadline = Date.now() + %(timeout_ms)d;
  const poll = () => {
    const app = window.app ?? window.comfyAPI?.app?.app;
    if (app && app.graph && app.canvas && document.querySelector('#graph-canvas')
        && window.LiteGraph?.registered_node_types?.['%(probe)s']) { resolve(true); return; }
    if (Date.now() > deadline) { reject(new Error('ComfyUI frontend did not start (no app/graph/canvas or %(probe)s not registered)')); return; }
    setTimeout(poll, 200);
  };
  poll();
})
"""

LOAD_AND_FIT_JS = """
(async () => {
  const app = window.app ?? window.comfyAPI.app.app;
  const style = document.createElement('style');
  style.textContent = %(css)s;
  document.head.appendChild(style);
  await app.loadGraphData(%(workflow)s, true, false, %(name)s);
  await new Promise(r => setTimeout(r, 500));
  document.querySelectorAll('.p-dialog-mask .p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click());
  window.dispatchEvent(new Event('resize'));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const canvas = app.canvas;
  const nodes = app.graph._nodes ?? app.graph.nodes;
  const groups = app.graph._groups ?? app.graph.groups ?? [];
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  const grow = (x, y, w, h) => { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); };
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
  const pad = %(padding)d;
  const scale = Math.min((viewW - 2 * pad) / (x1 - x0), (viewH - 2 * pad) / (y1 - y0), %(max_zoom)f);
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
          clip: {x: Math.floor(left), y: Math.floor(top), width: Math.ceil(right - left), height: Math.ceil(bottom - top)},
          dialogs: document.querySelectorAll('.p-dialog').length};
})()
"""


class RenderError(RuntimeError):
    """Something needed for rendering is missing or misbehaved; the message says what."""


def find_chromium(explicit: str | None) -> str:
    """Path of the Chromium/Chrome to use (``--chromium``, ``$CHROMIUM``, or the first on PATH); raise when there is none."""
    explicit = explicit or os.environ.get("CHROMIUM")
    if explicit:
        found = shutil.which(explicit)
        if found:
            return found
        raise RenderError(
            f"Chromium executable {explicit!r} (from --chromium / $CHROMIUM) does not exist or is not executable"
        )
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RenderError(
        "no Chromium found on PATH: install it with `apt-get install -y chromium` (Debian/Ubuntu), "
        "or pass --chromium PATH / set $CHROMIUM to a Chrome or Chromium executable"
    )


def frontend_root(python: str) -> Path:
    """The ``static`` folder of ``comfyui-frontend-package`` in the server's interpreter."""
    code = "import comfyui_frontend_package as p, os; print(os.path.join(os.path.dirname(p.__file__), 'static'))"
    result = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True)
    root = Path(result.stdout.strip()) if result.returncode == 0 else None
    if root is None or not (root / "index.html").is_file():
        raise RenderError(
            f"{python} has no comfyui-frontend-package (ComfyUI's web UI); install ComfyUI's requirements "
            "(`pip install -r .cache/comfyui/requirements.txt`) or pass --python with an interpreter that has them"
        )
    return root


def _move_fd_above(fd: int, lowest: int) -> int:
    """Duplicate ``fd`` onto the lowest free number >= ``lowest`` and close the original."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class Chromium:
    """Headless Chromium driven over the DevTools protocol on pipes (fds 3 and 4 of the browser)."""

    def __init__(self, executable: str, width: int, height: int, log_path: Path) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="render-workflow-chromium-"))
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Above 4, so that moving them onto fds 3 and 4 in the child cannot clobber one with the other.
        to_browser_r, from_browser_w = (_move_fd_above(fd, 10) for fd in (to_browser_r, from_browser_w))
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]

        def onto_fds_3_and_4() -> None:  # in the child: commands in on fd 3, replies out on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self._log = log_path.open("wb")
        # close_fds=False keeps the dup2'ed fds 3 and 4; every other fd Python opened is non-inheritable (PEP 446).
        self.process = subprocess.Popen(
            [executable, *args],
            preexec_fn=onto_fds_3_and_4,  # noqa: PLW1509 (this script starts no threads)
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session_id: str | None = None

    def close(self) -> None:
        """Stop the browser (asking it first, then by its own pid) and remove its profile."""
        if self.process.poll() is None:
            with contextlib.suppress(RenderError, OSError):
                self.send("Browser.close", session=False, timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._to_browser)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self._from_browser)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RenderError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], min(remaining, 1.0))
            if not ready:
                if self.process.poll() is not None:
                    raise RenderError(f"Chromium exited with code {self.process.returncode}")
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RenderError("Chromium closed the DevTools pipe (did it crash? see its log)")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0, session: bool = True
    ) -> Any:
        """Send one DevTools command (to the attached page unless ``session`` is false) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session_id:
            message["sessionId"] = self.session_id
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RenderError(f"DevTools {method} failed: {reply['error']}")
            return reply.get("result", {})

    def open_page(self, width: int, height: int) -> None:
        """Create a tab, attach to it and give it a ``width`` x ``height`` viewport at device scale 1."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)
        self.session_id = attached["sessionId"]
        self.send("Page.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": BEFORE_PAGE_JS})
        self.send("Runtime.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate JS in the page (awaiting promises) and return its JSON value; JS exceptions raise."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": int(timeout * 1000)},
            timeout=timeout + 10,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RenderError(f"page script failed: {text}")
        return result.get("result", {}).get("value")

    def console_errors(self) -> list[str]:
        """Console errors and uncaught exceptions the page reported so far (for diagnostics)."""
        lines = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                lines.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                lines.append(
                    " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
                )
        return lines


@contextlib.contextmanager
def running_server(python: str, comfyui: Path | None, timeout: float) -> Iterator[Any]:
    """``comfy_server`` from the test helpers with this pack linked in and the real frontend served."""
    sys.path.insert(0, str(REPO_ROOT / "tests" / "comfy"))
    try:
        from server import comfy_server  # tests/comfy/server.py (standard library only)
    finally:
        sys.path.pop(0)
    web_root = frontend_root(python)
    # comfy_server passes `--front-end-root <empty dir>` (API only); a later occurrence wins in argparse.
    with comfy_server(
        packs={PACK_NAME: REPO_ROOT},
        comfyui=comfyui,
        python=python,
        startup_timeout=timeout,
        extra_args=["--front-end-root", str(web_root)],
        threads=1,
    ) as server:
        yield server


def post_settings(url: str, settings: dict[str, Any]) -> None:
    """Store frontend settings for the server's (throw-away) default user."""
    request = urllib.request.Request(
        url + "/settings", data=json.dumps(settings).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def wait_for_frontend(browser: Chromium, url: str, probe: str, timeout: float) -> None:
    """Open ``url`` and wait until the app, its canvas and the node type ``probe`` exist."""
    browser.send("Page.navigate", {"url": url + "/"})
    try:
        browser.evaluate(WAIT_FOR_APP_JS % {"timeout_ms": int(timeout * 1000), "probe": probe}, timeout=timeout + 5)
    except RenderError as err:
        errors = "\n  ".join(browser.console_errors()[-10:]) or "(none)"
        raise RenderError(f"{err}\npage console errors:\n  {errors}") from err


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
    chromium = find_chromium(args.chromium)
    workflow_path = Path(args.workflow)
    workflow = json.loads(workflow_path.read_text())
    if "nodes" not in workflow:
        raise RenderError(f"{workflow_path} is not a UI-format workflow (no 'nodes'); API-format graphs have no layout")
    probe = next(
        (node["type"] for node in workflow["nodes"] if str(node.get("type", "")).startswith("DualAnoDiff")),
        "KSampler",
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        print(f"[render_workflow] starting ComfyUI ({args.python})", file=sys.stderr)
        server = stack.enter_context(running_server(args.python, args.comfyui, args.timeout))
        post_settings(server.url, UI_SETTINGS)
        browser_log = server.base_dir.parent / "chromium.log"
        browser = Chromium(chromium, args.width, args.height, browser_log)
        stack.callback(browser.close)
        try:
            browser.open_page(args.width, args.height)
            print(f"[render_workflow] loading {server.url} in {chromium}", file=sys.stderr)
            wait_for_frontend(browser, server.url, probe, args.timeout)
            info = browser.evaluate(
                LOAD_AND_FIT_JS
                % {
                    "css": json.dumps(HIDE_CHROME_CSS),
                    "workflow": json.dumps(workflow),
                    "name": json.dumps(workflow_path.name),
                    "padding": args.padding,
                    "max_zoom": args.max_zoom,
                },
                timeout=args.timeout,
            )
            print(f"[render_workflow] graph: {json.dumps(info)}", file=sys.stderr)
            params: dict[str, Any] = {"format": "png", "captureBeyondViewport": False, "fromSurface": True}
            if not args.no_crop:
                params["clip"] = {**info["clip"], "scale": 1}
            shot = browser.send("Page.captureScreenshot", params, timeout=args.timeout)
        except RenderError:
            log = browser_log.read_text(errors="replace")[-4000:] if browser_log.is_file() else ""
            sys.stderr.write(f"----- Chromium log (tail) -----\n{log}\n----- end -----\n")
            raise
    data, how = shrink_png(base64.b64decode(shot["data"]), MAX_PNG_BYTES)
    output.write_bytes(data)
    print(f"[render_workflow] wrote {output} ({len(data) // 1024} KiB, {how})", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="UI-format workflow JSON (e.g. workflows/dualanodiff_generate_pairs.json)")
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
    except RuntimeError as err:  # RenderError, or ComfyServerError from tests/comfy/server.py (log printed above)
        print(f"render_workflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
