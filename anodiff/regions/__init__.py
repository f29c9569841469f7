"""Where a defect goes in a photo: random placement on the object, crop-and-stitch, compositing, several defects."""
