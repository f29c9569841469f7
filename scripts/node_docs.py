#!/usr/bin/env python3
"""Write the node library's help pages, ``web/docs/<node id>.md``, from the nodes' own descriptions and tooltips.

ComfyUI's frontend shows ``WEB_DIRECTORY/docs/<node id>.md`` in the node library and the node's help panel
instead of the bare description. The pages are generated, so the tooltips stay the one source of each input's
help; a node listed in ``PICTURES`` gets a picture. ``--check`` (run by the tests) fails when a page is stale.

    python scripts/node_docs.py            # rewrite web/docs/
    python scripts/node_docs.py --check    # exit 1 and name the stale pages
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "web" / "docs"
PICTURES = {
    "DualAnoDiffSampler": ("workflow_generate_pairs.png", "The bundled workflow 'generate pairs'"),
    "DualAnoDiffPairLatent": (
        "workflow_any_sampler.png",
        "Pair Latent, Pair Conditioning and Split Pairs around KSampler",
    ),
    "DualAnoDiffBackgroundCompensation": ("workflow_generate_pairs_bcm.png", "Background Compensation in a graph"),
    "DualAnoDiffCropRegion": ("crop_and_stitch_steps.png", "Crop, generate, stitch at full resolution"),
    "DualAnoDiffStitchRegion": ("crop_and_stitch_steps.png", "Crop, generate, stitch at full resolution"),
    "DualAnoDiffRegionLatent": ("workflow_region_control.png", "Region control in a graph"),
    "DualAnoDiffTrain": ("workflow_train_and_generate.png", "The bundled workflow 'train and generate'"),
    "DualAnoDiffDefectLabels": ("workflow_multi_defect.png", "Two defect types on one part"),
}
"""Node id -> (picture in ``web/docs/img/``, caption)."""


def _kind(spec: Any) -> str:
    kind = spec[0]
    return "choice" if isinstance(kind, (list, tuple)) else str(kind)


def _row(name: str, spec: Any, optional: bool) -> str:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    default = options.get("default")
    shown = "" if default is None else f"`{default}`"
    help_text = " ".join(str(options.get("tooltip", "")).split())
    return f"| `{name}`{' (optional)' if optional else ''} | {_kind(spec)} | {shown} | {help_text} |"


def render(node_id: str, cls: type, title: str) -> str:
    """The help page of one node: description, picture, inputs with their tooltips, outputs with theirs."""
    lines = [f"# {title}", "", " ".join(str(getattr(cls, "DESCRIPTION", "")).split()), ""]
    if node_id in PICTURES:
        picture, caption = PICTURES[node_id]
        lines += [f"![{caption}](img/{picture})", ""]
    lines += ["## Inputs", "", "| input | type | default | what it does |", "|---|---|---|---|"]
    info = cls.INPUT_TYPES()
    for group, optional in (("required", False), ("optional", True)):
        lines += [_row(name, spec, optional) for name, spec in info.get(group, {}).items()]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    tips = getattr(cls, "OUTPUT_TOOLTIPS", None) or [""] * len(names)
    lines += ["", "## Outputs", "", "| output | type | what it is |", "|---|---|---|"]
    lines += [f"| `{n}` | {t} | {' '.join(str(tip).split())} |" for n, t, tip in zip(names, cls.RETURN_TYPES, tips)]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """``{file name: text}`` for every node the pack registers (ComfyUI must be importable)."""
    sys.path.insert(0, str(REPO_ROOT / "tests" / "comfy"))
    from pack import import_pack
    from tiny import init_comfy

    init_comfy(cpu=True)
    nodes = import_pack().nodes
    titles = nodes.NODE_DISPLAY_NAME_MAPPINGS
    return {f"{nid}.md": render(nid, cls, titles.get(nid, nid)) for nid, cls in nodes.NODE_CLASS_MAPPINGS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 naming stale or missing pages")
    args = parser.parse_args(argv)
    wanted = pages()
    present = {p.name for p in DOCS.glob("*.md")}
    stale = sorted(n for n, text in wanted.items() if not (DOCS / n).is_file() or (DOCS / n).read_text() != text)
    extra = sorted(present - set(wanted))
    if args.check:
        if stale or extra:
            print(f"web/docs is stale: {stale + extra}; run python scripts/node_docs.py", file=sys.stderr)
            return 1
        return 0
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (DOCS / name).write_text(wanted[name])
    for name in extra:
        (DOCS / name).unlink()
    print(f"web/docs: {len(stale)} written, {len(extra)} removed, {len(wanted)} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
