"""Region nodes: defect regions, region control, crop-and-stitch, multi-defect layouts and source folders."""
