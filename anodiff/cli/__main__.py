"""``python -m anodiff.cli`` (and ``torchrun -m anodiff.cli``): the ``anodiff`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
