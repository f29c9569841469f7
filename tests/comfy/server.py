"""Headless ComfyUI server for end-to-end tests, driven over its HTTP API.

Recipe from comfyui-internals.md §8: run ``main.py --cpu`` on a free loopback port in a
throw-away base directory, with the test-only nodes added through an
``extra_model_paths`` ``custom_nodes`` entry and optional node packs linked into
``<base>/custom_nodes``. Only the standard library is used on the client side.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tiny import TEST_NODES_DIR, add_comfyui_to_path

LOOPBACK = "127.0.0.1"
PACK_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", ".cache", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "*.egg-info"
)
"""What a copied pack leaves behind: VCS data, virtualenvs and caches can be gigabytes."""


class ComfyServerError(RuntimeError):
    """The server failed to start, rejected a prompt, or a prompt failed or timed out."""


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ComfyServer:
    """Client handle for a running server; obtain one from :func:`comfy_server`."""

    def __init__(self, process: subprocess.Popen, port: int, base_dir: Path, output_dir: Path, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.base_dir = base_dir
        self.output_dir = output_dir
        self.log_path = log_path
        self.url = f"http://{LOOPBACK}:{port}"
        self.client_id = uuid.uuid4().hex

    def log(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def _request(self, path: str, data: Any = None, timeout: float = 30.0) -> Any:
        """GET (or POST JSON when ``data`` is given) and decode the JSON reply."""
        body = None if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def get_bytes(self, path: str, timeout: float = 30.0) -> bytes:
        """Raw body of a GET, e.g. ``/view?...``."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read()

    def is_ready(self) -> bool:
        """True once ``/system_stats`` answers."""
        try:
            self._request("/system_stats", timeout=2.0)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
        return True

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """``/object_info`` (all node schemas) or ``/object_info/<node_class>``."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class)
        return self._request(path, timeout=60.0)

    def post_prompt(self, api_graph: Mapping[str, Any]) -> str:
        """Queue an API-format graph and return its ``prompt_id``; validation errors raise with ComfyUI's reasons."""
        try:
            reply = self._request("/prompt", {"prompt": dict(api_graph), "client_id": self.client_id})
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise ComfyServerError(f"/prompt rejected the graph (HTTP {err.code}): {detail}") from err
        if reply.get("node_errors"):
            raise ComfyServerError(f"/prompt reported node errors: {reply['node_errors']}")
        return str(reply["prompt_id"])

    def wait(self, prompt_id: str, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll ``/history/<id>`` until the prompt completes; return its history entry.

        Raises if the prompt ends in an execution error, the server dies, or ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyServerError(f"server exited with code {self.process.returncode} while running {prompt_id}")
            entry = self._request(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("status_str") == "error":
                raise ComfyServerError(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'))}")
            if entry is not None and status.get("completed"):
                return entry
            time.sleep(poll)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, api_graph: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """``post_prompt`` then ``wait``."""
        return self.wait(self.post_prompt(api_graph), timeout)

    def output_files(self, entry: Mapping[str, Any]) -> list[Path]:
        """Paths on disk of every ``type == "output"`` image listed in a history entry."""
        paths = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                if image.get("type") == "output":
                    paths.append(self.output_dir / image.get("subfolder", "") / image["filename"])
        return paths


def _write_extra_paths(path: Path, custom_node_dirs: list[Path]) -> None:
    """Write an ``extra_model_paths`` yaml with one ``custom_nodes`` entry per folder.

    JSON strings are valid YAML scalars, so no yaml library is needed and odd paths stay quoted.
    """
    lines = []
    for index, folder in enumerate(custom_node_dirs):
        lines += [f"tests_{index}:", f"    custom_nodes: {json.dumps(str(folder))}"]
    path.write_text("\n".join(lines) + "\n")


def _install_packs(custom_nodes: Path, packs: Mapping[str, Path], mode: Literal["symlink", "copy"]) -> None:
    """Link or copy each pack folder to ``custom_nodes/<name>``, where ComfyUI imports it as a package."""
    for name, source in packs.items():
        source = Path(source).resolve()
        if not (source / "__init__.py").is_file():
            raise ComfyServerError(f"pack {name!r} at {source} has no __init__.py; ComfyUI would not load it")
        target = custom_nodes / name
        if mode == "symlink":
            target.symlink_to(source, target_is_directory=True)
        else:
            shutil.copytree(source, target, ignore=PACK_COPY_IGNORE)


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate the server by its pid, then kill it if it ignores SIGTERM."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@contextmanager
def comfy_server(
    *,
    packs: Mapping[str, Path] | None = None,
    pack_mode: Literal["symlink", "copy"] = "symlink",
    extra_custom_node_dirs: list[Path] | None = None,
    comfyui: Path | None = None,
    python: str | None = None,
    workdir: Path | None = None,
    startup_timeout: float = 120.0,
    extra_args: list[str] | None = None,
    threads: int = 1,
) -> Iterator[ComfyServer]:
    """Start a headless CPU ComfyUI server, yield a :class:`ComfyServer`, and stop it on exit.

    packs: name -> folder to link (or copy) into ``<base>/custom_nodes/<name>``, e.g.
        ``{"dualanodiff": repo_root}``.
    extra_custom_node_dirs: further folders whose sub-folders are node packs; the
        test-only nodes (``tests/comfy/test_nodes``) are always added.
    python: interpreter with ComfyUI's requirements (default: the current one).
    workdir: where base/output/log go (default: a temporary folder removed on exit).
    threads: torch/OpenMP threads of the server; 1 keeps 2-core machines fast.

    On any failure inside the block (or at start-up) the server log is printed, so
    pytest shows it with the failure.
    """
    comfy_root = add_comfyui_to_path(comfyui)
    owned_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="comfy-e2e-")) if workdir is None else Path(workdir)
    base = root / "base"
    output = root / "output"
    web = root / "web"
    for folder in (base / "custom_nodes", output, web):
        folder.mkdir(parents=True, exist_ok=True)
    _install_packs(base / "custom_nodes", packs or {}, pack_mode)
    extra_yaml = root / "extra_model_paths.yaml"
    _write_extra_paths(extra_yaml, [TEST_NODES_DIR, *(extra_custom_node_dirs or [])])

    port = free_port()
    cmd = [
        python or sys.executable,
        str(comfy_root / "main.py"),
        "--cpu",
        "--listen",
        LOOPBACK,
        "--port",
        str(port),
        "--disable-auto-launch",
        "--extra-model-paths-config",
        str(extra_yaml),
        "--output-directory",
        str(output),
        "--base-directory",
        str(base),
        "--database-url",
        "sqlite:///:memory:",
        "--front-end-root",
        str(web),
        "--disable-api-nodes",
        *(extra_args or []),
    ]
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = root / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            cmd, cwd=comfy_root, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = ComfyServer(process, port, base, output, log_path)
    failed = True
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.is_ready():
            if process.poll() is not None:
                raise ComfyServerError(f"ComfyUI exited with code {process.returncode} during start-up")
            if time.monotonic() > deadline:
                raise ComfyServerError(f"ComfyUI did not answer /system_stats within {startup_timeout} s")
            time.sleep(0.2)
        yield server
        failed = False
    finally:
        _stop(process)
        if failed:
            sys.stderr.write(f"\n----- ComfyUI server log ({log_path}) -----\n{server.log()}\n----- end of log -----\n")
        if owned_tmp:
            shutil.rmtree(root, ignore_errors=True)
