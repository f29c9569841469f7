"""Reading the user's few-shot defect photos: dataset layouts, the training set, object and anomaly masks."""
