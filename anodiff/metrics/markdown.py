"""report.md: the tables of ``anodiff eval`` and how to read them (the protocol's pitfalls, stated next to the
numbers)."""

from __future__ import annotations

import math

from .published import comparison_table

COLUMNS = (
    ("generated", "generated", "{:d}"),
    ("real_train", "real train", "{:d}"),
    ("real_test", "real test", "{:d}"),
    ("empty_masks", "empty masks", "{:d}"),
    ("mask_area_generated", "mask area gen", "{:.2%}"),
    ("mask_area_real", "mask area real", "{:.2%}"),
    ("alignment_iou", "alignment IoU", "{:.3f}"),
    ("chance_iou", "chance IoU", "{:.3f}"),
    ("alignment_margin", "margin", "{:+.3f}"),
    ("novelty_share", "novel masks", "{:.1%}"),
    ("inception_score", "IS", "{:.3f}"),
    ("kid_x1000", "KID x1000", "{:.2f}"),
    ("ic_lpips", "IC-LPIPS", "{:.3f}"),
    ("fid", "FID", "{:.1f}"),
    ("background_psnr", "bg PSNR dB", "{:.1f}"),
    ("background_lpips", "bg LPIPS", "{:.3f}"),
)
"""The headline numbers IS, KID and IC-LPIPS side by side, then FID and the background preservation."""
LOCALIZATION = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "au_pro")

READING = """\
## How to read this

- **Alignment IoU**: the anomaly branch's mask against the defect region of the whole image, estimated as the
  difference to the nearest normal `train/good` image (a heuristic). Read the **margin** over the chance IoU of
  mismatched pairs: defects that always sit in one place score high without any alignment.
- **Novel masks**: share of non-empty generated masks whose best IoU with every training mask is below 0.5
  (low = the generator copies its few training masks). Empty masks are failures and are counted separately.
- **KID / FID**: Inception pool3 features against the real images of the type ({reference}). With tens of real
  images FID is strongly biased (its covariance has rank < 2048); compare KID, and FID only between runs with the
  same real set.
- **IS**: torch-fidelity's Inception Score of the generated images of the type (10 splits), the papers' headline
  number; the category's is the mean over its types, as the authors' `compute-is` script.
- **Background (bg PSNR, bg LPIPS)**: the generated image against the photo it was generated into (its sidecar's
  source; without one, the nearest `train/good` image), outside the mask grown by {dilate} px at 256 px, with the
  mask blanked in both; 100 dB means identical. High IC-LPIPS with a low bg PSNR is diversity bought by repainting
  the background (O2MAG's point), not by varied defects.
- **IC-LPIPS**: AnomalyDiffusion's protocol (LPIPS-VGG at 256 px, clusters around the training anomaly images,
  at most {cap} per cluster after a shuffle seeded with {seed}); clusters with fewer than two members are skipped
  as the authors' NaN. SeaS's variant (single-member clusters count 0) gives lower numbers: do not mix them.
- **Localisation**: DRAEM's U-Net trained on generated pairs and real normals; the checkpoint is chosen on a
  validation set (the few-shot training anomalies plus held-out `train/good` images), never on the test set as the
  authors' script does, so expect lower numbers than the papers report.
"""


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if fmt.endswith("d}") and not isinstance(value, int):
        return "–"
    return fmt.format(value)


def _table(rows: dict[str, dict], mean: dict[str, float]) -> list[str]:
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows.values())]
    lines = ["| type | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in sorted(rows.items()):
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(k), f) for k, _, f in columns) + " |")
    lines.append("| **mean** | " + " | ".join(_cell(mean.get(k), f) for k, _, f in columns) + " |")
    return lines


def headline_values(report: dict) -> dict[str, float]:
    """The numbers that sit beside the papers': the type means, the downstream scores of ``--localization`` and
    ``--classification``, replaced by those of ``--protocol`` (the papers' protocol) when it ran."""
    ours = dict(report["mean"])
    ours.update((report.get("localization") or {}).get("test", {}))
    if report.get("classification"):
        ours["classification_accuracy"] = report["classification"]["accuracy"]
    protocol = report.get("protocol") or {}
    ours.update((protocol.get("localization") or {}).get("test", {}))
    if protocol.get("classification"):
        ours["classification_accuracy"] = protocol["classification"]["accuracy"]
    return ours


def protocol_lines(protocol: dict | None) -> list[str]:
    """report.md's section on ``--protocol``: what trained, what was tested, and the scores."""
    if not protocol:
        return []
    counts = protocol["counts"]
    lines = [
        "## Downstream protocol (the papers')",
        "",
        (
            f"Per type up to {protocol['generated_per_type']} generated pairs plus the first third of the real "
            "anomalies "
            "trained the U-Net and the ResNet-34; the remaining real anomalies are the test set. Weights of the "
            f"{protocol['checkpoint']}."
        ),
        "",
        "| type | generated | real train | real test |",
        "|---|---|---|---|",
        *(
            f"| {t} | {counts['generated'][t]} | {counts['real_train'][t]} | {counts['real_test'][t]} |"
            for t in sorted(counts["generated"])
        ),
        "",
    ]
    loc = protocol.get("localization")
    if loc:
        lines += ["| localisation | " + " | ".join(LOCALIZATION) + " |", "|---" * (len(LOCALIZATION) + 1) + "|"]
        lines += ["| test | " + " | ".join(_cell(loc["test"].get(k), "{:.3f}") for k in LOCALIZATION) + " |", ""]
    cls = protocol.get("classification")
    if cls:
        accuracy = f"accuracy **{cls['accuracy']:.3f}** on {cls['test_images']} real test images."
        lines += [f"Classification ({cls['backbone']}): {accuracy}", ""]
    return lines


def to_markdown(report: dict, files: dict[str, str]) -> str:
    """The whole report.md; ``files`` names the written plots (kind -> file name) to embed."""
    settings = report["settings"]
    lines = [
        f"# anodiff eval: {report['category']}",
        "",
        f"- generated: `{report['generated']}`",
        (
            f"- real: `{report['real']}` (split `{settings['split']}`: the first third of each anomaly type is the "
            "few-shot training set, the rest the held-out test set)"
        ),
        f"- images per type limited to {settings['limit']}" if settings.get("limit") else "- all generated images",
        *(f"- {name} network: `{text}`" for name, text in report.get("networks", {}).items()),
        *([f"- real data layout: {report['layout']}"] if report.get("layout") else []),
        "",
    ]
    if report["notes"]:
        lines += ["## Not computed", ""] + [f"- {n}" for n in report["notes"]] + [""]
    lines += ["## Per anomaly type", ""] + _table(report["types"], report["mean"]) + [""]
    ours = headline_values(report)
    scope = f"{report['category']}, mean of its types"
    lines += comparison_table(ours, report.get("dataset", "MVTec AD"), scope)
    if "plot" in files:
        lines += [f"![metrics per anomaly type]({files['plot']})", ""]
    loc = report.get("localization")
    if loc:
        lines += [
            "## Downstream localisation",
            "",
            f"Checkpoint of epoch {loc['best_epoch']} of {len(loc['history'])}, chosen on the validation set.",
            "",
            "| set | " + " | ".join(LOCALIZATION) + " |",
            "|---" * (len(LOCALIZATION) + 1) + "|",
        ]
        for name in ("validation", "test"):
            lines.append(f"| {name} | " + " | ".join(_cell(loc[name].get(k), "{:.3f}") for k in LOCALIZATION) + " |")
        lines.append("")
        if "curve" in files:
            lines += [f"![localisation training]({files['curve']})", ""]
    cls = report.get("classification")
    if cls:
        lines += [
            "## Downstream classification",
            "",
            (
                f"{cls['backbone']}, trained on {cls['train_images']} generated images, tested on {cls['test_images']} "
                f"real held-out images: accuracy **{cls['accuracy']:.3f}**."
            ),
            "",
            "| type | recall |",
            "|---|---|",
            *(f"| {t} | {r:.3f} |" for t, r in sorted(cls["per_type"].items())),
            "",
        ]
    lines += protocol_lines(report.get("protocol"))
    reference = "held-out test part" if settings["reference"] == "heldout" else "all real anomalies of the type"
    lines.append(
        READING.format(
            reference=reference,
            cap=settings["max_per_cluster"],
            seed=settings["seed"],
            dilate=settings.get("background_dilate", 5),
        )
    )
    return "\n".join(lines)


__all__ = ["COLUMNS", "headline_values", "protocol_lines", "to_markdown"]
