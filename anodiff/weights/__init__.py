"""The weight file: our safetensors schema, the authors' format converted to it, the shared text-encoder LoRA."""
