"""Training-free one-shot defects: graft a reference defect's self-attention into a normal image (O2MAG, CVPR 2026).

No LoRA, no training: the reference defect image and the normal image are DDIM-inverted, three branches
(normal, reference, target) share every UNet call, and the target's self-attention inside the target mask reads
the reference's keys/values inside the reference mask (``anodiff.graft.attention``). See
docs/one-shot-reference.md for the facts this follows and where it departs.
"""
