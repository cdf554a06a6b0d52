# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The evaluation report handler: per-item metrics as a CSV, a JSON summary, a logged table and pictures."""

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
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from .metrics import METRICS, check_policy, column_names, json_safe, segmentation_metrics, summarize

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator")

__all__ = ["SegmentationReport", "picture_slices", "segmentation_picture"]

_POLICY_TEXT = {
    "skip": "both masks empty: Dice/IoU NaN; either empty: distances NaN; NaN left out of means",
    "zero": "as skip, but Dice/IoU of an empty/empty pair are 0",
    "one": "as skip, but Dice/IoU of an empty/empty pair are 1",
    "paper": "empty prediction: every metric 0, averaged in (CrossMatch LA); else as skip",
}


def picture_slices(label: np.ndarray, pred: np.ndarray, num_slices: int) -> list[int]:
    """Indices along the last axis: entry ``floor(k * n / (num_slices + 1))``, ``k = 1..num_slices``, of the ``n``
    slices holding ground-truth foreground (25/50/75% of them for 3 slices); of the prediction's when the label is
    empty; of the whole depth (around the middle) when both are empty. Repeated indices are dropped."""
    depth = label.shape[-1]
    other = tuple(range(label.ndim - 1))
    fg = np.flatnonzero((label > 0).any(axis=other))
    if fg.size == 0:
        fg = np.flatnonzero((pred > 0).any(axis=other))
    if fg.size == 0:
        fg = np.arange(depth)
    picks = [int(fg[min(k * fg.size // (num_slices + 1), fg.size - 1)]) for k in range(1, num_slices + 1)]
    return sorted(set(picks))


def segmentation_picture(image: np.ndarray, label: np.ndarray, pred: np.ndarray, slices: Sequence[int] = (0,),
                         gap: int = 2) -> np.ndarray:
    """A picture of a prediction: grey image, ground-truth contours in green, predicted contours in red on top.

    A 2D ``(X, Y)`` item is drawn whole; a 3D ``(X, Y, Z)`` item as the ``slices`` of its last axis side by side
    (RGB ``(Y, sum X + gaps, 3)``). Arrays are in MONAI's axis order, so each panel is transposed to rows = the
    second array axis. Intensities are windowed to the item's 0.5-99.5th percentiles and rescaled to 0-255
    (z-scored MRI holds negative values and bright outliers).
    """
    from skimage.segmentation import find_boundaries  # noqa: PLC0415  (only for pictures)

    img = image.astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    grey = (np.clip((img - lo) / (hi - lo + 1e-8), 0, 1) * 255).astype(np.uint8)
    panels = []
    for z in slices if img.ndim == 3 else [0]:
        sl = (slice(None), slice(None), z) if img.ndim == 3 else (slice(None), slice(None))
        rgb = np.stack([grey[sl].T] * 3, axis=-1)
        rgb[find_boundaries(label[sl].T, mode="inner")] = (0, 255, 0)
        rgb[find_boundaries(pred[sl].T, mode="inner")] = (255, 0, 0)
        panels.append(rgb)
    if gap > 0 and len(panels) > 1:
        sep = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
        panels = [p for panel in panels for p in (panel, sep)][:-1]
    return np.concatenate(panels, axis=1)


def _spacing_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # a collated list of numbers decollates into 0-d tensors or floats
        value = [float(torch.as_tensor(v).flatten()[0]) for v in value]
    return [float(s) for s in torch.as_tensor(value, dtype=torch.float64).flatten().tolist()]


class SegmentationReport:
    """Per-item metrics of an evaluator run, written as a CSV, a JSON summary, a logged table and pictures.

    The evaluator's post-processing must leave ``pred`` as an argmax map ``(1, *spatial)`` (or one-hot
    ``(C, *spatial)``) and ``label`` as ``(1, *spatial)`` class indices (or one-hot), 2D or 3D. Items are identified
    by the file name of ``image`` (MONAI's ``filename_or_obj`` meta, extensions dropped; a repeated name gets a
    ``~k`` suffix).

    Distances in mm use the pixel or voxel size of the evaluated grid, ordered like the array axes, looked up in
    this order: the output item's ``spacing_key``; the image meta ``pixel_spacing`` (2D images, see the switch_us
    transforms); the batch item's ``spacing_key`` (a datalist entry ``"spacing": [sx, sy, sz]``); the spacing of a
    reader's affine (kept up to date by MONAI's spatial transforms, when the meta holds ``pixdim`` or
    ``original_affine``; else ``pixdim[1:]``); the ``spacing`` argument. With ``resized`` (2D evaluation on the
    network's grid, as the Switch reference does), a spacing that does not come from the affine is the native one
    and is scaled by native size / evaluated size per axis (the image meta ``spatial_shape``). A non-finite or
    non-positive spacing counts as unknown; ``use_spacing=False`` reports pixel/voxel units only.

    Files in ``output_dir``: ``metrics_per_<item>.csv`` (one row per item: ``id``, the metrics of
    :func:`.metrics.segmentation_metrics`, ``spacing_mm``), ``metrics_summary.json`` (strict JSON, NaN -> null:
    mean, std, count per column, definitions, units, empty policy, counts) and ``pictures/<id>.png`` for the first
    ``max_pictures`` items. ``engine.state.metrics`` receives ``test_<column>`` = the mean of each column.

    Args:
        output_dir: where the CSV, the JSON summary and ``pictures/`` go.
        num_classes: classes of the segmentation, background included.
        class_names: names of all classes (background first) or of the foreground ones (multi-class columns).
        empty_policy: ``"skip"``, ``"zero"``, ``"one"`` or ``"paper"`` (see :mod:`.metrics`).
        max_pictures: items to draw (0 for none).
        num_slices: slices per picture of a 3D item.
        spacing: pixel/voxel size in mm used when neither the items nor the image meta carry one.
        use_spacing: False: pixel/voxel units only, whatever the data carries.
        spacing_key: item key holding the spacing.
        item: what an item is, for the file names and the log (``"image"`` or ``"volume"``).
        resized: the items are evaluated on a resized grid (scale a native spacing to it, see above).
        name: a name for the log lines and the summary (default: the output folder name).
    """

    def __init__(self, output_dir: str, num_classes: int = 2, class_names: Sequence[str] | None = None,
                 empty_policy: str = "skip", max_pictures: int = 8, num_slices: int = 3,
                 spacing: Sequence[float] | None = None, use_spacing: bool = True, spacing_key: str = "spacing",
                 item: str = "volume", resized: bool = False, name: str | None = None) -> None:
        check_policy(empty_policy)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2 (background included), got {num_classes}.")
        if int(num_slices) < 1:
            raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
        if item not in ("image", "volume"):
            raise ValueError(f"item must be 'image' or 'volume', got {item!r}.")
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else None
        self.columns = column_names(self.num_classes, self.class_names)  # validates the names early
        self.empty_policy = empty_policy
        self.max_pictures = int(max_pictures)
        self.num_slices = int(num_slices)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.use_spacing = bool(use_spacing)
        self.spacing_key = spacing_key
        self.item = item
        self.resized = bool(resized)
        self.name = name or self.output_dir.name
        self.rows: list[dict[str, Any]] = []
        self.empty_pred = [0] * (self.num_classes - 1)
        self.empty_label = [0] * (self.num_classes - 1)
        self._ids: set[str] = set()
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register the handler: reset at ``STARTED``, evaluate every ``ITERATION_COMPLETED``, write at ``COMPLETED``."""
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        """Forget the rows of a previous run."""
        self.rows = []
        self.empty_pred = [0] * (self.num_classes - 1)
        self.empty_label = [0] * (self.num_classes - 1)
        self._ids = set()

    @staticmethod
    def _label_map(x: Any) -> np.ndarray:
        """Class indices of a channel-first argmax map ``(1, ...)`` or one-hot map ``(C, ...)``."""
        arr = torch.as_tensor(x).detach().cpu()
        arr = arr.argmax(0) if arr.shape[0] > 1 else arr[0]
        return arr.round().long().numpy()

    @staticmethod
    def _meta_spacing(meta: Mapping, image: Any, ndim: int) -> list[float] | None:
        """The spacing a MONAI image reader recorded: the affine's (kept up to date by spatial transforms), or
        ``pixdim[1:ndim + 1]``; None when the meta does not come from a reader."""
        if not any(k in meta for k in ("pixdim", "original_affine")):
            return None
        affine = meta.get("affine", getattr(image, "affine", None))
        if affine is not None:
            a = torch.as_tensor(affine, dtype=torch.float64)
            if a.ndim == 2 and a.shape[0] >= ndim + 1 and a.shape[1] >= ndim + 1:
                return torch.linalg.norm(a[:ndim, :ndim], dim=0).tolist()
        pixdim = meta.get("pixdim")
        if pixdim is None:
            return None
        values = _spacing_list(pixdim) or []
        return values[1:ndim + 1] if len(values) > ndim else None

    def _spacing(self, item: Mapping, image: Any, shape: Sequence[int],
                 batch_item: Mapping | None = None) -> list[float] | None:
        """Pixel/voxel size of the evaluated grid in mm (see the class docstring), or None (units only)."""
        if not self.use_spacing:
            return None
        ndim = len(shape)
        meta = getattr(image, "meta", None) or {}
        native = (
            lambda: _spacing_list(item.get(self.spacing_key)),
            lambda: _spacing_list(meta.get("pixel_spacing")),
            lambda: _spacing_list((batch_item or {}).get(self.spacing_key)),
        )
        spacing = next((s for s in (c() for c in native) if s is not None), None)
        on_grid = False
        if spacing is None:
            spacing, on_grid = self._meta_spacing(meta, image, ndim), True
        if spacing is None:
            spacing, on_grid = self.spacing, False
        if spacing is None:
            return None
        if len(spacing) == 1:
            spacing = spacing * ndim
        if len(spacing) != ndim:
            raise ValueError(f"spacing {spacing} does not match the {ndim} spatial axes of the prediction.")
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            return None
        size = meta.get("spatial_shape")
        if self.resized and not on_grid and size is not None:
            size = [int(n) for n in torch.as_tensor(size).flatten().tolist()]
            if len(size) == ndim:
                spacing = [s * n / e for s, n, e in zip(spacing, size, shape)]
        return [float(s) for s in spacing]

    def _identify(self, item: Mapping, image: Any) -> str:
        meta = getattr(image, "meta", None) or getattr(item["pred"], "meta", None) or {}
        src = meta.get("filename_or_obj") or ""
        src = src[0] if isinstance(src, (list, tuple)) and src else src
        ident = Path(str(src)).name.split(".")[0] or f"{self.item}_{len(self.rows):04d}"
        base, k = ident, 1
        while ident in self._ids:  # one row and one picture per item even if names repeat
            ident, k = f"{base}~{k}", k + 1
        self._ids.add(ident)
        return ident

    def _batch_items(self, engine: Engine) -> list[Mapping]:
        """The spacing entries of the current batch, per item (only that key is decollated)."""
        batch = engine.state.batch
        if isinstance(batch, Mapping):
            if self.spacing_key not in batch or batch[self.spacing_key] is None:
                return []
            return decollate_batch({self.spacing_key: batch[self.spacing_key]})
        return [b for b in batch or [] if isinstance(b, Mapping)] if isinstance(batch, (list, tuple)) else []

    def __call__(self, engine: Engine) -> None:
        """Compute the metrics of every item in ``engine.state.output`` (decollated items, or a batch dict)."""
        output = engine.state.output
        items = decollate_batch(output) if isinstance(output, Mapping) else list(output)
        batch_items = self._batch_items(engine)
        for i, item in enumerate(items):
            batch_item = batch_items[i] if i < len(batch_items) else None
            pred, label = self._label_map(item["pred"]), self._label_map(item["label"])
            if pred.shape != label.shape:
                raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape.")
            image = item.get("image")
            ident = self._identify(item, image)
            spacing = self._spacing(item, image, pred.shape, batch_item)
            row = {"id": ident, **segmentation_metrics(pred, label, self.num_classes, self.class_names, spacing,
                                                         self.empty_policy)}
            row["spacing_mm"] = " ".join(f"{v:.6g}" for v in spacing) if spacing else ""
            self.rows.append(row)
            pred_counts = np.bincount(pred.ravel().clip(0, self.num_classes - 1), minlength=self.num_classes)
            label_counts = np.bincount(label.ravel().clip(0, self.num_classes - 1), minlength=self.num_classes)
            for c in range(1, self.num_classes):
                self.empty_pred[c - 1] += int(pred_counts[c] == 0)
                self.empty_label[c - 1] += int(label_counts[c] == 0)
            if len(self.rows) <= self.max_pictures:
                self._write_picture(ident, image, label, pred)

    def _write_picture(self, ident: str, image: Any, label: np.ndarray, pred: np.ndarray) -> None:
        img = (torch.as_tensor(image).detach().cpu().float().numpy()[0] if image is not None
               else np.zeros(label.shape, np.float32))
        if img.shape != label.shape:
            self.logger.warning(f"{self.name}: image {img.shape} and label {label.shape} of {ident} differ; no picture.")
            return
        slices = picture_slices(label, pred, self.num_slices) if label.ndim == 3 else [0]
        (self.output_dir / "pictures").mkdir(parents=True, exist_ok=True)
        Image.fromarray(segmentation_picture(img, label, pred, slices)).save(self.output_dir / "pictures" / f"{ident}.png")

    def _table(self, summary: Mapping[str, Mapping[str, float]]) -> str:
        """Markdown table: one row per metric; the mean column, then one column per class when several."""
        def cell(key: str) -> str:
            v = summary.get(key)
            return "-" if v is None or v["count"] == 0 else f"{v['mean']:.4f} ± {v['std']:.4f}"

        base = [k for k in summary if k in METRICS or (k.endswith("_mm") and k[:-3] in METRICS)]
        head = f"| {self.name} ({len(self.rows)} {self.item}s) | mean ± std | n |"
        rule = "|---|---|---|"
        if self.num_classes > 2:
            head += "".join(f" {c} |" for c in self.columns)
            rule += "---|" * len(self.columns)
        lines = ["", head, rule]
        for k in base:
            line = f"| {k} | {cell(k)} | {summary[k]['count']} |"
            if self.num_classes > 2:
                line += "".join(f" {cell(f'{k}_{c}')} |" for c in self.columns)
            lines.append(line)
        return "\n".join(lines)

    def completed(self, engine: Engine) -> None:
        """Write the CSV and the JSON summary, log the table, and store ``test_<column>`` means in the engine."""
        if not self.rows:
            self.logger.warning(f"{self.name}: no {self.item} was evaluated.")
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns: list[str] = []
        for row in self.rows:
            columns.extend(k for k in row if k not in columns)
        columns.append(columns.pop(columns.index("spacing_mm")))
        csv_path = self.output_dir / f"metrics_per_{self.item}.csv"
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        summary = summarize(self.rows)
        units = "pixels" if self.item == "image" else "voxels"
        report = {
            "name": self.name,
            f"num_{self.item}s": len(self.rows),
            "empty_policy": self.empty_policy,
            "units": f"{units}; *_mm in millimetres (spacing of the evaluated grid)",
            "classes": dict(enumerate(self.columns, start=1)),
            "counts": {
                f"{self.item}s": len(self.rows),
                f"{self.item}s_with_spacing": sum(1 for r in self.rows if r["spacing_mm"]),
                "empty_prediction": dict(zip(self.columns, self.empty_pred)),
                "empty_label": dict(zip(self.columns, self.empty_label)),
            },
            "definitions": {
                "dice": f"2|P∩G| / (|P|+|G|) on the whole {self.item} (MONAI compute_dice)",
                "iou": f"|P∩G| / |P∪G| on the whole {self.item} (MONAI compute_iou; the Jaccard index)",
                "hd95": "MONAI: 95th percentile of each directed surface distance set, then the maximum",
                "hd95_pooled": "95th percentile of the pooled two-way surface distances (medpy hd95, CrossMatch tables)",
                "asd": "mean surface distance, directed prediction -> ground truth (MONAI/medpy default)",
                "surface": f"{units} removed by one face-connected erosion",
                "class_mean": "plain columns of a multi-class task: mean over the foreground classes of the finite values",
                "std": f"population standard deviation (ddof=0) over the {self.item}s with a finite value",
                "count": f"{self.item}s with a finite value (NaN ones are left out of the mean)",
                "empty_policy": _POLICY_TEXT[self.empty_policy],
            },
            "metrics": summary,
        }
        # strict JSON: NaN (no finite value) is written as null
        text = json.dumps(json_safe(report), indent=2, allow_nan=False, ensure_ascii=False)
        (self.output_dir / "metrics_summary.json").write_text(text + "\n", encoding="utf-8")
        for k, v in summary.items():
            engine.state.metrics[f"test_{k}"] = v["mean"]
        self.logger.info(self._table(summary))
        self.logger.info(f"per-{self.item} metrics: {csv_path}; summary: {self.output_dir / 'metrics_summary.json'}; "
                         f"pictures: {self.output_dir / 'pictures'}")
