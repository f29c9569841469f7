"""ComfyUI's real web frontend in headless Chromium, driven by Playwright: the one browser harness of the project.

Used by ``scripts/render_workflow.py`` (README pictures) and by the browser tests. Chromium is Debian's
``/usr/bin/chromium`` (``apt-get install -y chromium``; ``$CHROMIUM`` or an explicit path for another build),
launched by Playwright with ``executable_path``, so Playwright's own browser download is never needed.
The server is ``server.comfy_server`` with the frontend of ``comfyui-frontend-package`` served.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

UI_SETTINGS: dict[str, Any] = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Toast.DisableReconnectingToast": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.EnableWorkflowViewRestore": False,
    "Comfy.Workflow.Persist": False,
    "Comfy.Window.UnloadConfirmation": False,
    "Comfy.ColorPalette": "dark",
    "Comfy.Locale": "en",
}
"""Written to the throw-away user's ``comfy.settings.json`` before the page opens: no first-run template browser,
no update toasts, only the canvas. The missing-node/model warnings stay on: a test wants to see them."""

BEFORE_PAGE_JS = "localStorage.setItem('vueNodesBannerDismissed', 'true');"
"""Runs before the app: no "Introducing Nodes 2.0" banner (the frontend keeps its dismissal in localStorage)."""

APP_READY_JS = """(probe) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  return !!(app && app.graph && app.canvas && document.querySelector('#graph-canvas')
            && window.LiteGraph?.registered_node_types?.[probe]);
}"""

GRAPH_PROBLEMS_JS = """() => {
  const app = window.app ?? window.comfyAPI.app.app;
  const nodes = app.graph._nodes ?? app.graph.nodes;
  const byId = new Map(nodes.map(n => [n.id, n]));
  const missing = nodes.filter(n => !window.LiteGraph.registered_node_types[n.type])
                       .map(n => `${n.id}:${n.type}`);
  const links = app.graph.links instanceof Map ? [...app.graph.links.values()] : Object.values(app.graph.links ?? {});
  const broken = links.filter(l => l && (!byId.has(l.origin_id) || !byId.has(l.target_id)
      || !byId.get(l.origin_id).outputs?.[l.origin_slot] || !byId.get(l.target_id).inputs?.[l.target_slot]))
    .map(l => `${l.origin_id}:${l.origin_slot}->${l.target_id}:${l.target_slot}`);
  const dialogs = [...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 300));
  return {nodes: nodes.length, missing, broken, dialogs};
}"""


class BrowserError(RuntimeError):
    """Something the browser harness needs is missing or misbehaved; the message says what."""


def find_chromium(explicit: str | None = None) -> str:
    """Path of the Chromium/Chrome to use (``explicit``, ``$CHROMIUM``, or the first on PATH)."""
    explicit = explicit or os.environ.get("CHROMIUM")
    if explicit:
        found = shutil.which(explicit)
        if found:
            return found
        raise BrowserError(f"Chromium executable {explicit!r} (--chromium / $CHROMIUM) does not exist")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError(
        "no Chromium found on PATH: install it with `apt-get install -y chromium` (Debian/Ubuntu), "
        "or pass --chromium PATH / set $CHROMIUM to a Chrome or Chromium executable"
    )


def frontend_root(python: str) -> Path:
    """The ``static`` folder of ``comfyui-frontend-package`` in the server's interpreter."""
    code = "import comfyui_frontend_package as p, os; print(os.path.join(os.path.dirname(p.__file__), 'static'))"
    result = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True)
    root = Path(result.stdout.strip()) if result.returncode == 0 else None
    if root is None or not (root / "index.html").is_file():
        raise BrowserError(
            f"{python} has no comfyui-frontend-package (ComfyUI's web UI); install ComfyUI's requirements "
            "or pass --python with an interpreter that has them"
        )
    return root


@contextlib.contextmanager
def frontend_server(packs: dict[str, Path], python: str, comfyui: Path | None, timeout: float) -> Iterator[Any]:
    """``comfy_server`` with ``packs`` linked in and the real frontend served (not the API-only empty folder)."""
    from server import comfy_server  # tests/comfy/server.py, on sys.path in tests and in render_workflow.py

    with comfy_server(
        packs=packs,
        comfyui=comfyui,
        python=python,
        startup_timeout=timeout,
        extra_args=["--front-end-root", str(frontend_root(python))],  # a later occurrence wins in argparse
        threads=1,
    ) as server:
        post_json(server.url + "/settings", UI_SETTINGS)
        yield server


def post_json(url: str, payload: dict[str, Any]) -> Any:
    """POST ``payload`` as JSON and return the decoded answer (``None`` when empty)."""
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body.strip() else None


@dataclass
class ComfyPage:
    """One page of the frontend plus what it reported: console errors, uncaught exceptions, /prompt answers."""

    page: Any
    errors: list[str] = field(default_factory=list)
    prompt_answers: list[dict[str, Any]] = field(default_factory=list)

    def problems(self) -> dict[str, Any]:
        """Nodes whose type is unknown, links whose ends are gone, open dialogs (missing nodes/models...)."""
        return self.page.evaluate(GRAPH_PROBLEMS_JS)

    def load(self, workflow: dict[str, Any], name: str) -> dict[str, Any]:
        """Load a UI-format workflow the way the page's file open does, then report ``problems()``."""
        script = "async ([wf, name]) => { const app = window.app ?? window.comfyAPI.app.app;"
        script += " await app.loadGraphData(wf, true, true, name); }"
        self.page.evaluate(script, [workflow, name])
        self.page.wait_for_timeout(500)
        found = self.problems()
        if found["nodes"] != len(workflow["nodes"]):
            raise BrowserError(f"{name}: the page shows {found['nodes']} nodes, the file has {len(workflow['nodes'])}")
        return found


def _record_console(errors: list[str], message: Any) -> None:
    if message.type == "error":
        errors.append(message.text)


def _record_response(errors: list[str], answers: list[dict[str, Any]], response: Any) -> None:
    if response.url.endswith("/prompt") and response.request.method == "POST":
        try:
            answers.append({"status": response.status, **response.json()})
        except Exception as exc:  # noqa: BLE001 (a non-JSON answer is itself the finding)
            errors.append(f"/prompt answer {response.status} is not JSON: {exc}")


@contextlib.contextmanager
def comfy_page(
    url: str,
    *,
    chromium: str | None = None,
    width: int = 1600,
    height: int = 1000,
    probe: str = "KSampler",
    timeout: float = 180.0,
) -> Iterator[ComfyPage]:
    """Open the frontend at ``url`` in headless Chromium and wait until the app runs and ``probe`` is a node type."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium(chromium)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            view = ComfyPage(page)
            page.on("console", lambda msg: _record_console(view.errors, msg))
            page.on("pageerror", lambda exc: view.errors.append(str(exc)))
            page.on("response", lambda r: _record_response(view.errors, view.prompt_answers, r))
            page.add_init_script(BEFORE_PAGE_JS)
            page.goto(url + "/", timeout=timeout * 1000)
            try:
                page.wait_for_function(APP_READY_JS, arg=probe, timeout=timeout * 1000, polling=200)
            except Exception as err:
                tail = "\n  ".join(view.errors[-10:]) or "(none)"
                raise BrowserError(f"ComfyUI frontend did not start ({probe} not registered)\n  {tail}") from err
            page.wait_for_load_state("networkidle", timeout=timeout * 1000)
            page.wait_for_timeout(1000)  # the frontend opens its start-up workflow after the app is ready
            yield view
        finally:
            browser.close()


def add_tests_to_path() -> None:
    """Make ``server`` (tests/comfy/server.py) importable for scripts outside pytest."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
