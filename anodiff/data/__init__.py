"""Reading the user's few-shot defect photos: dataset layouts, the training set, object and anomaly masks."""

from ..legacy import forward

__getattr__ = forward(f"{__name__}.fewshot", f"{__name__}.training_set")
