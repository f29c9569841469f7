"""``anodiff eval``: metrics for a generated (image, mask) set against the real category (MVTec AD, MPDD, BTAD, VisA).

Modules: ``alignment`` (mask IoU, chance level, novelty), ``fid`` (FID, KID), ``inception_score`` (IS),
``ic_lpips`` + ``perceptual`` (IC-LPIPS with LPIPS-VGG), ``detection`` (AUROC, AP, F1-max, AU-PRO), ``localization`` +
``unet`` (downstream DRAEM U-Net), ``classification`` (downstream ResNet-34), ``report`` + ``markdown`` +
``published`` + ``plots`` (the command's output, beside the papers' numbers), ``summary`` (categories averaged),
``assets`` (weight files), ``tree`` (folders).
The command line (``anodiff.cli.eval``) imports none of them at start-up; they load when the command runs.
"""

from __future__ import annotations
