"""Downstream classification, the paper's third task: which anomaly type is this? (landscape.md §5)

A torchvision ResNet-34 learns the anomaly types of one category from the generated images only, and is tested on
the real held-out two thirds of each type (the images the generator never saw). The backbone starts from the user's
torchvision ImageNet file (``resnet34-b627a593.pth``, read with ``weights_only=True``) or, when none is given, from
scratch; the report says which, because the two give very different accuracies. Training settings are ours (the
authors' script is not part of DualAnoDiff's release): Adam, cross-entropy, random flips, images resized to ``size``.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, recall_score
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..common.precision import autocast, grad_scaler, training_step
from .localization import load_item

log = logging.getLogger(__name__)

RESNET34_FILE = "resnet34-b627a593.pth"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
"""ImageNet normalisation, which torchvision's weights expect (kept for scratch training: it is harmless)."""


@dataclass(frozen=True)
class ClassificationConfig:
    """Training settings; ``weights`` is torchvision's ResNet-34 file, or None to train from scratch."""

    size: int = 224
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    weights: str | None = None
    device: str | None = None
    mixed_precision: str = "no"


@dataclass
class ClassificationResult:
    """Accuracy over the real test images, per-type recall, and what the backbone started from."""

    accuracy: float
    per_type: dict[str, float]
    backbone: str
    train_images: int
    test_images: int
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def build_resnet34(classes: int, weights: str | os.PathLike | None = None) -> tuple[torch.nn.Module, str]:
    """(ResNet-34 with a ``classes``-way head, a sentence saying what it started from)."""
    import torchvision

    model = torchvision.models.resnet34(weights=None)
    if weights is None:
        model.fc = torch.nn.Linear(model.fc.in_features, classes)
        return model, "ResNet-34 trained from scratch (no --cls-weights given)"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--cls-weights {path} is not a file; give torchvision's {RESNET34_FILE} or omit it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # a wrong file fails in torch.load or in load_state_dict, with several types
        raise ValueError(f"{path}: not torchvision's ResNet-34 state dict ({err.__class__.__name__}: {err})") from err
    model.fc = torch.nn.Linear(model.fc.in_features, classes)
    return model, f"ResNet-34 from {path.name} (fine-tuned; new {classes}-way head)"


class _Images(Dataset):
    def __init__(self, items: Sequence[tuple[Path, int]], size: int, flips: bool, seed: int) -> None:
        self.items, self.size, self.flips, self.rng = list(items), size, flips, random.Random(seed)
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        image = torch.from_numpy(load_item((path, None), self.size)[0])
        if self.flips and self.rng.random() < 0.5:
            image = image.flip(-1)
        if self.flips and self.rng.random() < 0.5:
            image = image.flip(-2)
        return (image - self.mean) / self.std, label


def classification_items(
    generated: dict[str, list], real_root: str | os.PathLike, category: str, rule: str = "floor"
) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(type names, generated training items, real held-out test items), labels indexing the sorted type names."""
    from .tree import real_split

    types = sorted(generated)
    train = [(p.image, k) for k, t in enumerate(types) for p in generated[t]]
    test = [(image, k) for k, t in enumerate(types) for image, _ in real_split(real_root, category, t, rule).test]
    return types, train, test


def train_classifier(
    types: list[str],
    train: list[tuple[Path, int]],
    test: list[tuple[Path, int]],
    config: ClassificationConfig | None = None,
    progress: bool = True,
) -> ClassificationResult:
    """Train on ``train`` (generated) and score once on ``test`` (real); at least two types are needed."""
    config = config or ClassificationConfig()
    if len(types) < 2:
        raise ValueError(f"classification needs at least two anomaly types, got {len(types)} ({', '.join(types)})")
    if not train or not test:
        raise ValueError(f"classification needs generated and real test images, got {len(train)} and {len(test)}")
    torch.manual_seed(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, backbone = build_resnet34(len(types), config.weights)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.mixed_precision)
    loader = DataLoader(
        _Images(train, config.size, True, config.seed),
        config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    history = []
    for _ in tqdm(range(config.epochs), desc="classification", unit="epoch", disable=not progress):
        model.train()
        losses = []
        for images, labels in loader:
            with autocast(device, config.mixed_precision):
                logits = model(images.to(device))
            losses.append(
                training_step(torch.nn.functional.cross_entropy(logits.float(), labels.to(device)), optimizer, scaler)
            )
        history.append(float(np.mean(losses)))
    model.eval()
    predicted = []
    with torch.no_grad():  # scoring in fp32: cheap, and the accuracy does not depend on the training precision
        for images, _ in DataLoader(_Images(test, config.size, False, 0), config.batch_size):
            predicted.append(model(images.to(device)).argmax(1).cpu().numpy())
    truth, guess = np.array([k for _, k in test]), np.concatenate(predicted)
    recall = recall_score(truth, guess, labels=list(range(len(types))), average=None, zero_division=0.0)
    per_type = {t: float(r) for t, r in zip(types, recall) if (truth == types.index(t)).any()}
    return ClassificationResult(float(accuracy_score(truth, guess)), per_type, backbone, len(train), len(test), history)


__all__ = [
    "ClassificationConfig",
    "ClassificationResult",
    "build_resnet34",
    "classification_items",
    "train_classifier",
]
