"""Utilities every part may use and that know nothing of the model: image files, precision, job locks, assets."""
