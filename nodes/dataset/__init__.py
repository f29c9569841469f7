"""Dataset nodes: anomaly-mask extraction, filtering the generated pairs, and exporting them as a dataset."""
