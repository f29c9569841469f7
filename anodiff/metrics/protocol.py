"""``anodiff eval --protocol``: the downstream protocol the recent papers report (AnomalyDiffusion, DualAnoDiff,
O2MAG's ``eval/`` scripts), with one change.

Per anomaly type, up to ``generated_per_type`` generated pairs (1000 in the papers; the first ones, sorted) plus the
first third of the real anomalies (the few-shot training part, ``--split``) train the localisation U-Net and the
ResNet-34 classifier; the remaining real anomalies (with ``test/good`` for localisation) are the test set.
Localisation samples are half normal ``train/good`` images, a ``real_share`` of real training anomalies (0.1, O2MAG's
loader) and the rest generated pairs. The change: the published scripts keep the epoch that scores best on the test
set; here no checkpoint is picked on it, both networks are scored once with their last epoch's weights (the real
training anomalies are in the training set, so there is nothing left to select on).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)

GENERATED_PER_TYPE = 1000
REAL_SHARE = 0.1


def protocol_sets(
    generated: dict[str, list], real_root: str | Path, category: str, rule: str = "floor", per_type: int = 1000
) -> dict:
    """Per type the generated pairs used (``(image, mask)``), the real training and the real test pairs."""
    from .tree import real_split

    if per_type < 1:
        raise ValueError(f"--protocol-generated must be >= 1 pair per type, got {per_type}")
    sets = {"generated": {}, "real_train": {}, "real_test": {}}
    for anomaly in sorted(generated):
        split = real_split(real_root, category, anomaly, rule)
        sets["generated"][anomaly] = [(p.image, p.mask) for p in generated[anomaly][:per_type]]
        sets["real_train"][anomaly], sets["real_test"][anomaly] = split.train, split.test
    return sets


def run_protocol(generated: dict[str, list], opts, category: str, notes: list[str]) -> dict:
    """The protocol's localisation and classification results for one category (``opts``: ``EvalOptions``)."""
    from .localization import LocalizationConfig, LocalizationData, train_localization
    from .tree import real_normals

    sets = protocol_sets(generated, opts.real, category, opts.split, opts.protocol_generated)
    counts = {k: {t: len(v) for t, v in per.items()} for k, per in sets.items()}
    short = [t for t, n in counts["generated"].items() if n < opts.protocol_generated]
    if short:
        have = ", ".join(str(counts["generated"][t]) for t in short)
        notes.append(
            f"protocol: fewer than {opts.protocol_generated} generated pairs for {', '.join(short)} "
            f"({have}); the papers use 1000 per type"
        )
    out: dict = {
        "generated_per_type": opts.protocol_generated,
        "real_share": REAL_SHARE,
        "counts": counts,
        "checkpoint": "last epoch (no selection on the test set)",
    }
    real_train = [item for t in sorted(sets["real_train"]) for item in sets["real_train"][t]]
    test = [(p, None) for p in real_normals(opts.real, category, "test")]
    test += [item for t in sorted(sets["real_test"]) for item in sets["real_test"][t]]
    config = LocalizationConfig(seed=opts.seed, device=opts.device, mixed_precision=opts.mixed_precision, **opts.loc)
    data = LocalizationData(real_normals(opts.real, category), sets["generated"], [], test, real_train)
    try:
        out["localization"] = train_localization(data, replace(config, real_share=REAL_SHARE), opts.progress).as_dict()
    except ValueError as exc:
        notes.append(f"protocol localisation skipped: {exc}")
    out["classification"] = _classification(sets, opts, notes)
    return out


def _classification(sets: dict, opts, notes: list[str]) -> dict | None:
    from .classification import ClassificationConfig, train_classifier

    types = sorted(sets["generated"])
    train = [(image, k) for k, t in enumerate(types) for image, _ in sets["generated"][t] + sets["real_train"][t]]
    test = [(image, k) for k, t in enumerate(types) for image, _ in sets["real_test"][t]]
    config = ClassificationConfig(seed=opts.seed, device=opts.device, mixed_precision=opts.mixed_precision, **opts.cls)
    try:
        return train_classifier(types, train, test, config, opts.progress).as_dict()
    except ValueError as exc:
        notes.append(f"protocol classification skipped: {exc}")
        return None


__all__ = ["GENERATED_PER_TYPE", "REAL_SHARE", "protocol_sets", "run_protocol"]
