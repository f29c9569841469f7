"""Ctrl-C during ``anodiff train`` as a stop request that every process of the run agrees on.

A terminal's Ctrl-C reaches every process of a ``torchrun``/``accelerate launch`` run at slightly different
moments (and torchrun forwards it once more), and a signal sent to one process reaches that one only. Each process
records the request; after every step the processes sum their flags (one tiny all-reduce), so all of them stop
after the same step, the main process writes the one checkpoint, and each exits with 130. A second Ctrl-C more
than ``ABORT_AFTER`` seconds after the first aborts at once (the repeat torchrun sends comes within that).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch

log = logging.getLogger(__name__)

ABORT_AFTER = 3.0
"""Seconds after a first Ctrl-C from which a second one aborts instead of waiting for the step to end."""


class AgreedStop:
    """The run's SIGINT handler and the per-step agreement; ``accelerator``: the run's ``accelerate.Accelerator``."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.requested_at: float | None = None
        self._previous = None

    def listen(self) -> None:
        """Install the handler (the main thread only: Python delivers signals there)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.request)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def request(self, signum=None, frame=None) -> None:
        """Ctrl-C: stop after the current step; a second one, ``ABORT_AFTER`` s later or more, aborts."""
        now = time.monotonic()
        if self.requested_at is not None:
            if now - self.requested_at >= ABORT_AFTER:
                raise KeyboardInterrupt
            return
        self.requested_at = now
        log.warning("interrupted: finishing the step and writing a checkpoint (Ctrl-C again to abort)")

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def agreed(self) -> bool:
        """Whether any process of the run asked to stop; every process gets the same answer at the same step."""
        if self.accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
