"""Sampling nodes: the Dual Sampler and its parts (Pair Latent, Pair Conditioning, Split Pairs)."""
