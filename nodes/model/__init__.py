"""Model nodes: Load Dual LoRA and Background Compensation, and the patches they put on a cloned MODEL."""
