"""ComfyUI adapter of the training-free one-shot mode (``anodiff.graft``)."""
