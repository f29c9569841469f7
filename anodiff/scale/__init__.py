"""``--ray``: dataset-scale generation and many training jobs on a Ray cluster (the optional ``ray`` extra).

Only the command line imports this package, and only when ``--ray`` is given: ``import anodiff`` and the ComfyUI
nodes never load Ray.
"""
