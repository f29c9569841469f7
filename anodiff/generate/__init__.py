"""``anodiff generate``: many pairs from a trained model, resumable, sharded, with regions and source photos."""
