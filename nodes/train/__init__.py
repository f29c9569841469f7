"""Training nodes: the few-shot training set, training a DualAnoDiff LoRA on a MODEL, and saving it."""
