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

Surfaces are the mask pixels removed by one erosion with the face-connected structuring element
(``generate_binary_structure(ndim, 1)``), the definition MONAI (``get_mask_edges``) and medpy share, so
``hd95`` and ``hd95_pooled`` differ only in how the two directed distance sets are combined.

Public API: :func:`binary_metrics` / :func:`class_metrics` (one foreground class), :func:`multiclass_metrics`
(classes ``1..C-1``, nested), :func:`segmentation_metrics` (flat row for a report), :func:`pooled_hd95`,
:func:`summarize` and the :class:`SegmentationReport` handler.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image
from scipy import ndimage

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator")

__all__ = [
    "EMPTY_POLICIES",
    "SegmentationReport",
    "binary_metrics",
    "class_metrics",
    "multiclass_metrics",
    "pooled_hd95",
    "segmentation_metrics",
    "summarize",
]

EMPTY_POLICIES = ("skip", "zero", "one")


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: those removed by one face-connected erosion (MONAI's and medpy's surface)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pooled_hd95(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None,
                percentile: float = 95.0) -> float:
    """Percentile of the pooled two-way surface distances (medpy's ``hd95``, the CrossMatch tables).

    MONAI's HD95 takes the percentile of each directed distance set and then the larger of the two; here
    both sets are pooled first, so this value is at most MONAI's (up to the interpolation between order
    statistics).

    Args:
        pred: predicted mask (boolean or 0/1), spatial axes only.
        label: ground-truth mask of the same shape.
        spacing: pixel size per array axis; ``None`` measures in pixels.
        percentile: the percentile (0-100) of the pooled distances.

    Returns:
        The distance, or NaN when either mask is empty.
    """
    pred, label = _as_numpy(pred).astype(bool), _as_numpy(label).astype(bool)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}.")
    if not pred.any() or not label.any():
        return math.nan
    sp = None if spacing is None else [float(s) for s in spacing]
    sp_, sl_ = _surface(pred), _surface(label)
    d_pl = ndimage.distance_transform_edt(~sl_, sampling=sp)[sp_]
    d_lp = ndimage.distance_transform_edt(~sp_, sampling=sp)[sl_]
    return float(np.percentile(np.concatenate([d_pl, d_lp]), percentile))


def class_metrics(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None,
                  empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of one binary mask pair (any number of spatial dimensions).

    Returns:
        ``dice``, ``iou``, ``hd95``, ``hd95_pooled``, ``asd`` in pixels/voxels and, when ``spacing`` is given,
        ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
    """
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}.")
    p = torch.as_tensor(_as_numpy(pred).astype(bool))
    g = torch.as_tensor(_as_numpy(label).astype(bool))
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


def binary_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                   spacing: Sequence[float] | None = None, empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of the foreground class 1 of two class-index maps (or boolean masks).

    Args:
        pred: predicted class indices, spatial axes only (``(H, W)`` or ``(H, W, D)``), no channel axis.
        label: ground-truth class indices of the same shape.
        spacing: pixel size in mm per array axis; adds ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
        empty_policy: Dice/IoU when both masks are empty: ``"skip"`` (NaN), ``"zero"`` or ``"one"``.

    Returns:
        See :func:`class_metrics`.
    """
    return class_metrics(_as_numpy(pred) == 1, _as_numpy(label) == 1, spacing, empty_policy)


def multiclass_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, num_classes: int,
                       spacing: Sequence[float] | None = None, empty_policy: str = "skip") -> dict[int, dict[str, float]]:
    """:func:`class_metrics` of every foreground class ``1..num_classes-1`` of two class-index maps.

    Args:
        pred: predicted class indices, spatial axes only.
        label: ground-truth class indices of the same shape.
        num_classes: classes including the background.
        spacing: pixel size in mm per array axis, or ``None``.
        empty_policy: see :func:`binary_metrics`.

    Returns:
        ``{class_index: metrics}``.
    """
    pred, label = _as_numpy(pred), _as_numpy(label)
    return {c: class_metrics(pred == c, label == c, spacing, empty_policy) for c in range(1, int(num_classes))}


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of the finite values of every numeric column.

    Args:
        rows: per-image metric dicts (non-numeric entries such as ``id`` are ignored).

    Returns:
        ``{column: {"mean", "std", "count"}}``; ``std`` is the population standard deviation (numpy's
        default, ``ddof=0``); NaN/inf values are left out, mean and std are NaN when none is left.
    """
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k, v in row.items() if k not in keys and _is_number(v))
    summary = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in rows if _is_number(r.get(k)) and math.isfinite(r[k])], dtype=float)
        summary[k] = {
            "mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std()) if vals.size else math.nan,
            "count": int(vals.size),
        }
    return summary


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    ``image`` (MONAI's ``filename_or_obj`` meta; a repeated name gets a ``~k`` suffix). Distances in mm use the
    native pixel size from the output item's ``spacing_key``, the image meta ``pixel_spacing`` (see
    :class:`scripts.transforms.PixelSpacingToMetad`), the batch item's ``spacing_key`` or ``pixel_spacing``,
    ordered like the loaded array's axes (``[sx, sy]`` for PNGs loaded by MONAI), scaled by native size / evaluated size per axis, since
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
        self._ids: set[str] = set()
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.rows = []
        self._ids = set()

    @staticmethod
    def _label_map(x: Any) -> np.ndarray:
        arr = torch.as_tensor(x).detach().cpu()
        if arr.ndim >= 3 and arr.shape[0] > 1:  # one-hot
            arr = arr.argmax(0)
        elif arr.ndim >= 3:
            arr = arr[0]
        return arr.round().long().numpy()

    def _spacing(self, item: Mapping, image: Any, shape: Sequence[int], batch_item: Mapping | None = None) -> list[float] | None:
        """Pixel size of the evaluated grid: the item's native spacing scaled by native / evaluated size.

        The native spacing is looked up in order: the output item's ``spacing_key``, the image meta
        ``pixel_spacing``, the batch item's ``spacing_key`` (``engine.state.batch``), ``pixel_spacing``.
        A non-finite or non-positive spacing counts as unknown (pixels only).
        """
        meta = getattr(image, "meta", {}) if image is not None else {}
        candidates = [item.get(self.spacing_key), meta.get("pixel_spacing"),
                      (batch_item or {}).get(self.spacing_key), self.pixel_spacing]
        spacing = next((c for c in candidates if c is not None), None)
        if spacing is None:
            return None
        if isinstance(spacing, (list, tuple)):  # a collated list of numbers becomes a list of 0-d tensors
            spacing = [float(torch.as_tensor(v).flatten()[0]) for v in spacing]
        spacing = [float(s) for s in torch.as_tensor(spacing).flatten().tolist()]
        if len(spacing) == 1:
            spacing = spacing * len(shape)
        if len(spacing) != len(shape):
            raise ValueError(f"spacing {spacing} does not match the {len(shape)} spatial axes of the prediction")
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            return None
        native = getattr(image, "meta", {}).get("spatial_shape") if image is not None else None
        if native is not None:
            native = [int(n) for n in torch.as_tensor(native).flatten().tolist()]
            if len(native) == len(shape):
                spacing = [s * n / e for s, n, e in zip(spacing, native, shape)]
        return spacing

    def __call__(self, engine: Engine) -> None:
        """Compute the metrics of every image in ``engine.state.output`` (decollated items, or a batch dict)."""
        output = engine.state.output
        items = decollate_batch(output) if isinstance(output, dict) else list(output)
        batch = engine.state.batch
        batch_items = decollate_batch(batch) if isinstance(batch, dict) else list(batch or [])
        for i, item in enumerate(items):
            batch_item = batch_items[i] if i < len(batch_items) and isinstance(batch_items[i], Mapping) else None
            pred, label = self._label_map(item["pred"]), self._label_map(item["label"])
            if pred.shape != label.shape:
                raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
            image = item.get("image")
            meta = getattr(image, "meta", None) or getattr(item["pred"], "meta", {}) or {}
            src = meta.get("filename_or_obj") or f"image_{len(self.rows):04d}"
            ident = Path(str(src[0] if isinstance(src, (list, tuple)) else src)).name.split(".")[0]
            ident, k = ident or f"image_{len(self.rows):04d}", 1
            while ident in self._ids:  # keep one row and one overlay per image even if names repeat
                ident, k = f"{ident.rsplit('~', 1)[0]}~{k}", k + 1
            self._ids.add(ident)
            spacing = self._spacing(item, image, pred.shape, batch_item)
            row = {"id": ident, **segmentation_metrics(pred, label, self.num_classes, self.class_names, spacing, self.empty_policy)}
            row["spacing_mm"] = " ".join(f"{v:.6g}" for v in spacing) if spacing else ""  # of the evaluated grid
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
            "definitions": {
                "hd95": "MONAI: 95th percentile of each directed surface distance set, then the maximum",
                "hd95_pooled": "95th percentile of the pooled two-way surface distances (medpy hd95)",
                "asd": "mean surface distance, directed prediction -> ground truth (MONAI/medpy default)",
                "std": "population standard deviation (ddof=0) over the images with a finite value",
            },
            "metrics": summary,
        }
        # strict JSON: NaN (no finite value) is written as null
        (self.output_dir / "metrics_summary.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        for k, v in summary.items():
            engine.state.metrics[f"test_{k}"] = v["mean"]
        lines = ["", f"| {self.name} ({len(self.rows)} images) | mean | std | n |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | {v['count']} |" for k, v in summary.items()]
        self.logger.info("\n".join(lines))
        self.logger.info(f"per-image metrics: {self.output_dir / 'metrics_per_image.csv'}; summary: "
                         f"{self.output_dir / 'metrics_summary.json'}; overlays: {self.output_dir / 'overlays'}")
