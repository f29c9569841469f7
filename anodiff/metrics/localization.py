"""Downstream localisation: train DRAEM's discriminative U-Net on generated pairs, score it on real test images.

The authors' protocol (reference §9.3) with one change: they keep the checkpoint that scores best **on the test set**,
which inflates the numbers. We select on a validation set the network never trains on and that is not the test set:
the few-shot training anomalies (real, seen by the generator only) and a held-out share of ``train/good``; the test
set (the last two thirds of each anomaly type plus ``test/good``) is only scored with the chosen checkpoint.
Each epoch draws ``samples_per_epoch`` samples: half normal images with an empty mask, half generated pairs of a
random anomaly type. Images are RGB in [0, 1] at ``size`` px, masks resized by area share and cut at 0.5.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..common.imageio import read_image, resize
from ..common.mask_rule import read_binary_mask
from ..common.precision import autocast, grad_scaler, training_step
from .detection import au_pro, auroc, average_precision, f1_max
from .unet import DiscriminativeUNet, anomaly_probability, focal_loss, image_scores

log = logging.getLogger(__name__)

Item = tuple[Path, Path | None]
"""An image and its mask; None for a normal image (empty mask)."""


@dataclass(frozen=True)
class LocalizationConfig:
    """Training settings; defaults are the authors' (200 epochs of 500 samples is a GPU job)."""

    size: int = 256
    base_width: int = 64
    epochs: int = 200
    samples_per_epoch: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    gamma: float = 2.0
    pool: int = 21
    val_every: int = 1
    val_normal_share: float = 0.1
    real_share: float = 0.0
    """Share of samples drawn from ``LocalizationData.real`` (the protocol's real training anomalies)."""
    seed: int = 0
    device: str | None = None
    mixed_precision: str = "no"


@dataclass
class LocalizationData:
    """Training normals and pairs; an empty ``validation`` means: no selection, the last epoch's weights."""

    normals: list[Path]
    generated: dict[str, list[Item]]
    validation: list[Item]
    test: list[Item]
    real: list[Item] = field(default_factory=list)


@dataclass
class LocalizationResult:
    best_epoch: int
    validation: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def hold_out_normals(normals: Sequence[Path], share: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(training normals, validation normals): a seeded ``share`` (at least one) of ``train/good`` is held out."""
    if not 0.0 < share < 1.0 or len(normals) < 2:
        raise ValueError(f"need >= 2 normal images and 0 < share < 1 to hold some out, got {len(normals)} and {share}")
    order = list(normals)
    random.Random(seed).shuffle(order)
    k = max(1, round(share * len(order)))
    return sorted(order[k:]), sorted(order[:k])


def load_item(item: Item, size: int) -> tuple[np.ndarray, np.ndarray]:
    """((3, size, size) float32 image in [0, 1], (1, size, size) float32 0/1 mask)."""
    image_path, mask_path = item
    image = read_image(image_path)
    image = resize(image, size, size)
    mask = np.zeros((size, size), np.float32)
    if mask_path is not None:
        raw = read_binary_mask(mask_path).astype(np.float32)  # the layout's rule (common.mask_rule)
        mask = (cv2.resize(raw, (size, size), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.float32)
    return image.transpose(2, 0, 1).copy(), mask[None]


class _Items(Dataset):
    def __init__(self, items: Sequence[Item], size: int) -> None:
        self.items, self.size = list(items), size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_item(self.items[index], self.size)
        return torch.from_numpy(image), torch.from_numpy(mask)


def epoch_items(data: LocalizationData, count: int, rng: random.Random, real_share: float = 0.0) -> list[Item]:
    """One epoch's samples: each a normal image (empty mask) or, with probability 1/2, a pair: a real training
    anomaly with probability ``real_share`` (when ``data.real`` has any), else a random type's generated pair."""
    kinds = sorted(data.generated)

    def pair() -> Item:
        if data.real and rng.random() < 2 * real_share:
            return rng.choice(data.real)
        return rng.choice(data.generated[rng.choice(kinds)])

    return [pair() if rng.random() < 0.5 else (rng.choice(data.normals), None) for _ in range(count)]


@torch.no_grad()
def evaluate(model: torch.nn.Module, items: Sequence[Item], config: LocalizationConfig, device: torch.device) -> dict:
    """Image AUROC/AP/F1-max and pixel AUROC/AP/F1-max/AU-PRO of ``model`` on ``items``."""
    model.eval()
    maps, masks, scores = [], [], []
    for images, targets in DataLoader(_Items(items, config.size), batch_size=config.batch_size):
        with torch.no_grad(), autocast(device, config.mixed_precision):
            logits = model(images.to(device))
        prob = anomaly_probability(logits.float())
        scores.append(image_scores(prob, config.pool).cpu().numpy())
        maps.append(prob.cpu().numpy())
        masks.append(targets[:, 0].numpy() > 0.5)
    maps_, masks_, scores_ = np.concatenate(maps), np.concatenate(masks), np.concatenate(scores)
    labels = np.array([mask is not None for _, mask in items])
    return {
        "image_auroc": auroc(labels, scores_),
        "image_ap": average_precision(labels, scores_),
        "image_f1_max": f1_max(labels, scores_),
        "pixel_auroc": auroc(masks_, maps_),
        "pixel_ap": average_precision(masks_, maps_),
        "pixel_f1_max": f1_max(masks_, maps_),
        "au_pro": au_pro(list(masks_), list(maps_)),
    }


def selection_score(metrics: dict[str, float]) -> float:
    """The authors' checkpoint criterion (image AUROC + pixel AUROC + pixel AP + AU-PRO), applied to validation."""
    return metrics["image_auroc"] + metrics["pixel_auroc"] + metrics["pixel_ap"] + metrics["au_pro"]


def build_data(
    generated: dict[str, list],
    real_root: str | Path,
    category: str,
    rule: str = "floor",
    val_share: float = 0.1,
    seed: int = 0,
) -> LocalizationData:
    """Training, validation and test items from ``tree.generated_pairs`` output and the real category."""
    from .tree import real_normals, real_split

    normals, val_normals = hold_out_normals(real_normals(real_root, category), val_share, seed)
    validation: list[Item] = [(p, None) for p in val_normals]
    test: list[Item] = [(p, None) for p in real_normals(real_root, category, "test")]
    for anomaly in sorted(generated):
        split = real_split(real_root, category, anomaly, rule)
        validation += split.train
        test += split.test
    pairs = {anomaly: [(p.image, p.mask) for p in items] for anomaly, items in generated.items()}
    return LocalizationData(normals, pairs, validation, test)


def train_localization(
    data: LocalizationData, config: LocalizationConfig | None = None, progress: bool = True
) -> LocalizationResult:
    """Train, select the checkpoint on ``data.validation`` (none: keep the last epoch's weights), and score it once
    on ``data.test``."""
    config = config or LocalizationConfig()
    if not data.generated or not data.normals:
        raise ValueError("localisation training needs generated pairs and normal train/good images")
    for name, items in (("validation", data.validation), ("test", data.test))[0 if data.validation else 1 :]:
        kinds = {mask is None for _, mask in items}
        if kinds != {True, False}:
            raise ValueError(f"the {name} set needs both normal and anomalous images, got {len(items)} images")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = DiscriminativeUNet(config.base_width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = grad_scaler(device, config.mixed_precision)
    milestones = [int(config.epochs * 0.8), int(config.epochs * 0.9)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.2)
    best, best_state, best_epoch, best_val, history = -np.inf, None, 0, {}, []
    for epoch in tqdm(range(1, config.epochs + 1), desc="localisation", unit="epoch", disable=not progress):
        model.train()
        losses = []
        items = epoch_items(data, config.samples_per_epoch, rng, config.real_share)
        loader = DataLoader(_Items(items, config.size), config.batch_size)
        for images, masks in loader:
            with autocast(device, config.mixed_precision):
                logits = model(images.to(device))
            loss = focal_loss(logits.float(), masks.to(device), gamma=config.gamma)
            losses.append(training_step(loss, optimizer, scaler))
        scheduler.step()
        row = {"epoch": epoch, "loss": float(np.mean(losses))}
        if data.validation and (epoch % config.val_every == 0 or epoch == config.epochs):
            metrics = evaluate(model, data.validation, config, device)
            row["validation_score"] = selection_score(metrics)
            if row["validation_score"] > best:
                best, best_epoch, best_val = row["validation_score"], epoch, metrics
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        history.append(row)
        log.info("epoch %d: %s", epoch, row)
    if best_state is None:
        best_epoch = config.epochs
    else:
        model.load_state_dict(best_state)
    return LocalizationResult(best_epoch, best_val, evaluate(model, data.test, config, device), history)


__all__ = [
    "Item",
    "LocalizationConfig",
    "LocalizationData",
    "LocalizationResult",
    "build_data",
    "epoch_items",
    "evaluate",
    "hold_out_normals",
    "load_item",
    "selection_score",
    "train_localization",
]
