"""The DualAnoDiff math in plain torch: pair layout, per-branch LoRA, SAIM, BCM, the attention sites. Imports nothing
else of anodiff."""
