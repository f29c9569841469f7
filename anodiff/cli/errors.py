"""How the command line reports a user's mistake (a missing file, a bad value): one line on stderr naming the
command, and exit code 2; no traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)
"""The library's user errors (DualWeightsError, DataError and BaseModelError are ValueErrors)."""

Command = Callable[[argparse.Namespace], int]


def report(command: str, exc: Exception) -> int:
    print(f"anodiff {command}: error: {exc}", file=sys.stderr)
    return 2


def reports_errors(command: str, *more: type[Exception]) -> Callable[[Command], Command]:
    """A command's ``func`` that turns ``USER_ERRORS`` (and ``more``, errors that are the user's for this command
    only) into ``report``, also when it is called without ``main``."""

    def wrap(func: Command) -> Command:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except (*USER_ERRORS, *more) as exc:
                return report(command, exc)

        return run

    return wrap
