"""Training the dual model: the one training step, the ``anodiff train`` loop, the in-memory session of the
ComfyUI node, previews and loss plots."""
