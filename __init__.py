"""ComfyUI entry point of the DualAnoDiff node pack; the nodes live in ``nodes/``, the model in ``anodiff/``.
``web/`` holds the node library's help pages (``web/docs/<node id>.md``, written by ``scripts/node_docs.py``)."""

if __package__:  # a package (ComfyUI's custom_nodes/<folder>, tests/comfy/pack.py); pytest may import the file alone
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
