# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Per-image evaluation: Dice, IoU, HD95 and ASD (pixels, and mm when the spacing is known), a CSV, a JSON
summary, a logged table and overlay pictures.

Metrics are MONAI's (``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance``, directed prediction -> ground truth as in the reference) on one-hot
maps. A pooled-percentile HD95 (the 95th percentile of the pooled two-way surface distances, medpy's
``hd95``, used by the CrossMatch tables) is reported beside MONAI's.

Empty masks: when both prediction and ground truth of a class are empty, Dice and IoU follow
``empty_policy`` ("skip": NaN and left out of the means, "zero": 0 as the Switch reference's torchmetrics
does, "one": 1); HD95 and ASD are NaN whenever either mask is empty and are left out of the means (as the
reference drops non-finite values). Means count only finite values; the summary gives each count.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image
from scipy import ndimage

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator")

__all__ = ["SegmentationReport", "class_metrics", "pooled_hd95", "segmentation_metrics", "summarize"]

EMPTY_POLICIES = ("skip", "zero", "one")


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))


def pooled_hd95(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the pooled two-way surface distances (medpy's ``hd95``); NaN if a mask is empty."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    if not pred.any() or not label.any():
        return math.nan
    sp = None if spacing is None else [float(s) for s in spacing]
    sp_, sl_ = _surface(pred), _surface(label)
    d_pl = ndimage.distance_transform_edt(~sl_, sampling=sp)[sp_]
    d_lp = ndimage.distance_transform_edt(~sp_, sampling=sp)[sl_]
    return float(np.percentile(np.concatenate([d_pl, d_lp]), 95))


def class_metrics(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None,
                  empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of one binary mask pair (any number of spatial dimensions).

    Returns:
        ``dice``, ``iou``, ``hd95``, ``hd95_pooled``, ``asd`` in pixels/voxels and, when ``spacing`` is given,
        ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
    """
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}.")
    p = torch.as_tensor(np.asarray(pred, bool))
    g = torch.as_tensor(np.asarray(label, bool))
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(g.shape)}.")
    onehot_p = torch.stack([~p, p])[None].float()
    onehot_g = torch.stack([~g, g])[None].float()
    out: dict[str, float] = {}
    if not p.any() and not g.any():
        value = {"skip": math.nan, "zero": 0.0, "one": 1.0}[empty_policy]
        out["dice"] = out["iou"] = value
    else:
        out["dice"] = float(compute_dice(onehot_p, onehot_g, include_background=False, ignore_empty=False))
        out["iou"] = float(compute_iou(onehot_p, onehot_g, include_background=False, ignore_empty=False))
    both = bool(p.any() and g.any())
    for unit, sp in [("", None)] + ([("_mm", [float(s) for s in spacing])] if spacing is not None else []):
        if both:
            hd = float(compute_hausdorff_distance(onehot_p, onehot_g, include_background=False, percentile=95, spacing=sp))
            asd = float(compute_average_surface_distance(onehot_p, onehot_g, include_background=False, spacing=sp))
            pooled = pooled_hd95(p.numpy(), g.numpy(), sp)
        else:
            hd = asd = pooled = math.nan
        out[f"hd95{unit}"] = hd if math.isfinite(hd) else math.nan
        out[f"hd95_pooled{unit}"] = pooled
        out[f"asd{unit}"] = asd if math.isfinite(asd) else math.nan
    return out


def segmentation_metrics(pred: np.ndarray, label: np.ndarray, num_classes: int = 2,
                         class_names: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
                         empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of each foreground class of integer label maps; keys are plain for a binary task and
    ``<metric>_<class name>`` plus the class mean ``<metric>`` for several classes."""
    pred, label = np.asarray(pred), np.asarray(label)
    if num_classes == 2:
        return class_metrics(pred == 1, label == 1, spacing, empty_policy)
    names = list(class_names or [str(c) for c in range(num_classes)])
    out: dict[str, float] = {}
    per_class = {names[c]: class_metrics(pred == c, label == c, spacing, empty_policy) for c in range(1, num_classes)}
    for name, metrics in per_class.items():
        out.update({f"{k}_{name}": v for k, v in metrics.items()})
    for key in next(iter(per_class.values())):
        vals = [m[key] for m in per_class.values() if math.isfinite(m[key])]
        out[key] = float(np.mean(vals)) if vals else math.nan
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of the finite values of every numeric column."""
    keys = [k for k in (rows[0] if rows else {}) if k != "id" and isinstance(rows[0][k], (int, float))]
    summary = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if isinstance(r[k], (int, float)) and math.isfinite(r[k])], dtype=float)
        summary[k] = {
            "mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std()) if vals.size else math.nan,
            "count": int(vals.size),
        }
    return summary


def _overlay(image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Grey image with the ground-truth boundary in green and the predicted boundary in red (H, W, 3)."""
    from skimage.segmentation import find_boundaries  # noqa: PLC0415  (only for pictures)

    img = image.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    grey = ((img - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[find_boundaries(label > 0, mode="inner")] = (0, 255, 0)
    rgb[find_boundaries(pred > 0, mode="inner")] = (255, 0, 0)
    return rgb


class SegmentationReport:
    """Per-image metrics of an evaluator run, written as CSV, JSON summary, a logged table and overlays.

    The evaluator's post-processing must leave ``pred`` as an argmax map ``(1, H, W)`` (or one-hot
    ``(C, H, W)``) and ``label`` as ``(1, H, W)`` class indices. Images are identified by the file name of
    ``image`` (MONAI's ``filename_or_obj`` meta). Distances in mm use the native pixel size from the image
    meta ``pixel_spacing`` (see :class:`scripts.transforms.PixelSpacingToMetad`) or ``pixel_spacing``, scaled by native size / evaluated size per axis, since
    evaluation runs on the network's grid as the reference does; the native size is the image meta
    ``spatial_shape``. MONAI's PNG reader returns (W, H) arrays: pictures are transposed back to (H, W).

    Args:
        output_dir: where ``metrics_per_image.csv``, ``metrics_summary.json`` and ``overlays/`` go.
        num_classes: classes of the segmentation, background included.
        class_names: names of the classes (for multi-class column names).
        empty_policy: Dice/IoU of an image whose prediction and label are both empty: skip | zero | one.
        max_overlays: overlay pictures to write (0 for none).
        spacing_key: item key holding the native pixel spacing.
        pixel_spacing: spacing used when items carry none (None: pixels only).
        name: a name for the log lines and the summary (default: the output folder name).
    """

    def __init__(self, output_dir: str, num_classes: int = 2, class_names: Sequence[str] | None = None,
                 empty_policy: str = "skip", max_overlays: int = 16, spacing_key: str = "spacing",
                 pixel_spacing: Sequence[float] | None = None, name: str | None = None) -> None:
        if empty_policy not in EMPTY_POLICIES:
            raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}.")
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else None
        self.empty_policy = empty_policy
        self.max_overlays = int(max_overlays)
        self.spacing_key = spacing_key
        self.pixel_spacing = pixel_spacing
        self.name = name or self.output_dir.name
        self.rows: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.rows = []

    @staticmethod
    def _label_map(x: Any) -> np.ndarray:
        arr = torch.as_tensor(x).detach().cpu()
        if arr.ndim >= 3 and arr.shape[0] > 1:  # one-hot
            arr = arr.argmax(0)
        elif arr.ndim >= 3:
            arr = arr[0]
        return arr.round().long().numpy()

    def _spacing(self, item: dict, image: Any, shape: Sequence[int]) -> list[float] | None:
        meta = getattr(image, "meta", {}) if image is not None else {}
        spacing = item.get(self.spacing_key, meta.get("pixel_spacing", self.pixel_spacing))
        if spacing is None:
            return None
        spacing = [float(s) for s in torch.as_tensor(spacing).flatten().tolist()]
        if len(spacing) == 1:
            spacing = spacing * len(shape)
        native = getattr(image, "meta", {}).get("spatial_shape") if image is not None else None
        if native is not None:
            native = [int(n) for n in torch.as_tensor(native).flatten().tolist()]
            if len(native) == len(shape):
                spacing = [s * n / e for s, n, e in zip(spacing, native, shape)]
        return spacing

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            pred, label = self._label_map(item["pred"]), self._label_map(item["label"])
            image = item.get("image")
            meta = getattr(image, "meta", None) or getattr(item["pred"], "meta", {}) or {}
            src = meta.get("filename_or_obj", f"image_{len(self.rows):04d}")
            ident = Path(str(src[0] if isinstance(src, (list, tuple)) else src)).name.split(".")[0]
            spacing = self._spacing(item, image, pred.shape)
            row = {"id": ident, **segmentation_metrics(pred, label, self.num_classes, self.class_names, spacing, self.empty_policy)}
            self.rows.append(row)
            if len(self.rows) <= self.max_overlays and image is not None:
                img = torch.as_tensor(image).detach().cpu().float().numpy()[0]
                if img.ndim == 2:
                    (self.output_dir / "overlays").mkdir(parents=True, exist_ok=True)
                    rgb = _overlay(img.T, label.T, pred.T)
                    Image.fromarray(rgb).save(self.output_dir / "overlays" / f"{ident}.png")

    def completed(self, engine: Engine) -> None:
        if not self.rows:
            self.logger.warning(f"{self.name}: no image was evaluated.")
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns = list(self.rows[0])
        with open(self.output_dir / "metrics_per_image.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        summary = summarize(self.rows)
        report = {
            "name": self.name,
            "num_images": len(self.rows),
            "empty_policy": self.empty_policy,
            "units": "pixels; *_mm in millimetres (pixel spacing scaled to the evaluated grid)",
            "metrics": summary,
        }
        (self.output_dir / "metrics_summary.json").write_text(json.dumps(report, indent=2))
        for k, v in summary.items():
            engine.state.metrics[f"test_{k}"] = v["mean"]
        lines = ["", f"| {self.name} ({len(self.rows)} images) | mean | std | n |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | {v['count']} |" for k, v in summary.items()]
        self.logger.info("\n".join(lines))
        self.logger.info(f"per-image metrics: {self.output_dir / 'metrics_per_image.csv'}; summary: "
                         f"{self.output_dir / 'metrics_summary.json'}; overlays: {self.output_dir / 'overlays'}")
