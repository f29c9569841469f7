"""Turning generated pairs into a dataset: quality filter, MVTec/COCO export, per-pair sidecars."""
