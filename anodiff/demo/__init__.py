"""``anodiff demo``: SAIM's alignment claim, reproduced offline on a CPU in about 10 minutes, no pretrained weights.

A small dual-branch UNet is trained from scratch on a synthetic few-shot set (brick texture, near-black
defects, exact masks), once with the project's ``SAIM`` after every residual block and once without. Each model
then generates pairs (global image, defect alone on grey); the demo measures how well the anomaly-branch mask
matches the defect in the global image, against the chance level, and writes contact sheets, an MVTec-style
folder and ``metrics.json``. See ``run.py`` for the outputs, ``metrics.py`` for the rules.
"""

from __future__ import annotations

from .run import DEFAULT_MINUTES, run_demo, summary_table

__all__ = ["DEFAULT_MINUTES", "run_demo", "summary_table"]
