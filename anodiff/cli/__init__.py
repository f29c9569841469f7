"""``anodiff`` command line: the only place with argparse and file-system defaults.

One module per command family maps its flags onto the library's functions: ``models`` (convert, info,
fetch-models), ``train``, ``generate``, ``eval``, ``demo`` and ``export`` (export, filter). Each command's ``func``
returns the exit code; ``main`` turns the library's user errors into exit code 2.
"""

from __future__ import annotations

import argparse
import logging

from .. import __version__
from .demo import register as register_demo
from .errors import USER_ERRORS, report
from .eval import register as register_eval
from .export import register_export, register_filter
from .generate import register as register_generate
from .graft import register as register_graft
from .models import register_convert, register_fetch_models, register_info
from .train import register as register_train


def build_parser() -> argparse.ArgumentParser:
    """The ``anodiff`` parser with every subcommand, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(prog="anodiff", description="DualAnoDiff: paired defect images and masks.")
    parser.add_argument("--version", action="version", version=f"anodiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    register_convert(sub)
    register_fetch_models(sub)
    register_train(sub)
    register_generate(sub)
    register_graft(sub)
    register_eval(sub)
    register_demo(sub)
    register_filter(sub)
    register_export(sub)
    register_info(sub)
    return parser


__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``anodiff <argv>`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        return report(args.command, exc)
