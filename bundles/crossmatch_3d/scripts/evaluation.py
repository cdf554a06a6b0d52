# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Per-volume evaluation: Dice, Jaccard, HD95 and ASD (voxels, and mm when the spacing is known), a CSV, a JSON
summary, a logged table and slice pictures.

This is the 3D counterpart of ``bundles/switch_us/scripts/evaluation.py`` (a bundle is self-contained, so this is
its own module); the functions work on 2D and 3D arrays alike.

Metrics are MONAI's on the whole volume: ``compute_dice``, ``compute_iou`` (reported as ``jaccard``), HD95 as
``compute_hausdorff_distance(percentile=95)`` (the 95th percentile of each directed surface-distance set, then the
larger) and ASD as ``compute_average_surface_distance`` (directed prediction -> ground truth, as medpy's ``asd``
that the CrossMatch tables use). A pooled-percentile HD95, ``hd95_pooled`` (the 95th percentile of the pooled
two-way surface distances, medpy's ``hd95``, used by the CrossMatch tables), is reported beside MONAI's. The
distances are computed once per volume, class and unit from MONAI's ``get_mask_edges`` and
``get_surface_distance`` (the building blocks of those MONAI functions, which give identical values), so the three
distance metrics cost one edge extraction and two nearest-surface queries.

Surfaces are the mask voxels removed by one erosion with the face-connected structuring element, the definition
MONAI (``get_mask_edges``) and medpy share, so ``hd95`` and ``hd95_pooled`` differ only in how the two directed
distance sets are combined.

Empty masks (``empty_policy``), per class:

- ``"skip"``: when prediction and ground truth are both empty, Dice and Jaccard are NaN; HD95, pooled HD95 and ASD
  are NaN whenever either mask is empty. NaN values are left out of every mean (class means and summaries).
- ``"zero"``: as ``"skip"``, but Dice and Jaccard of an empty/empty pair are 0 (and averaged in).
- ``"one"``: as ``"skip"``, but Dice and Jaccard of an empty/empty pair are 1 (and averaged in).
- ``"paper"``: the CrossMatch LA protocol: when the *prediction* is empty (whatever the ground truth), every
  metric (``dice``, ``jaccard``, ``hd95``, ``hd95_pooled``, ``asd`` and their ``*_mm`` variants) is 0 and is
  averaged in. A non-empty prediction with an empty ground truth has Dice and Jaccard 0 and NaN distances
  (left out), since the reference never meets that case (medpy would raise).

In every policy a non-empty prediction against an empty ground truth, or the reverse, has Dice and Jaccard 0.

Public API: :func:`binary_metrics` / :func:`class_metrics` (one foreground class), :func:`multiclass_metrics`
(classes ``1..C-1``, nested), :func:`segmentation_metrics` (flat row: class means plus per-class columns),
:func:`pooled_hd95`, :func:`summarize` and the :class:`VolumeReport` handler.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.metrics import compute_dice, compute_iou
from monai.metrics.utils import get_mask_edges, get_surface_distance
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator")

__all__ = [
    "EMPTY_POLICIES",
    "METRICS",
    "VolumeReport",
    "binary_metrics",
    "class_metrics",
    "multiclass_metrics",
    "pooled_hd95",
    "segmentation_metrics",
    "summarize",
]

logger = logging.getLogger(__name__)

EMPTY_POLICIES = ("skip", "zero", "one", "paper")
"""Handling of empty masks; see the module docstring."""

METRICS = ("dice", "jaccard", "hd95", "hd95_pooled", "asd")
"""The metrics of one class, in column order (distances also as ``<name>_mm`` when the spacing is known)."""

_DISTANCES = ("hd95", "hd95_pooled", "asd")


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_policy(empty_policy: str) -> None:
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}.")


def _masks(pred: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_numpy(pred).astype(bool), _as_numpy(label).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from label shape {g.shape}.")
    return p, g


def _surface_distances(edges: tuple[np.ndarray, np.ndarray],
                       spacing: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed surface distances (prediction -> ground truth, ground truth -> prediction), as MONAI computes them."""
    edges_p, edges_g = edges
    d_pg = torch.as_tensor(get_surface_distance(edges_p, edges_g, "euclidean", spacing)).float()
    d_gp = torch.as_tensor(get_surface_distance(edges_g, edges_p, "euclidean", spacing)).float()
    return d_pg, d_gp


def pooled_hd95(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                spacing: Sequence[float] | None = None, percentile: float = 95.0) -> float:
    """Percentile of the pooled two-way surface distances (medpy's ``hd95``, the CrossMatch tables).

    MONAI's HD95 takes the percentile of each directed distance set and then the larger of the two; here both
    sets are pooled first, so this value is at most MONAI's (up to the interpolation between order statistics).

    Args:
        pred: predicted mask (boolean or 0/1), spatial axes only (2D or 3D).
        label: ground-truth mask of the same shape.
        spacing: voxel size per array axis; ``None`` measures in voxels.
        percentile: the percentile (0-100) of the pooled distances.

    Returns:
        The distance, or NaN when either mask is empty.
    """
    p, g = _masks(pred, label)
    if not p.any() or not g.any():
        return math.nan
    sp = None if spacing is None else [float(s) for s in spacing]
    d_pg, d_gp = _surface_distances(get_mask_edges(p, g, crop=True), sp)
    return float(np.percentile(torch.cat([d_pg, d_gp]).double().numpy(), percentile))


def class_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                  spacing: Sequence[float] | None = None, empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of one binary mask pair (2D or 3D).

    Args:
        pred: predicted mask (boolean or 0/1), spatial axes only.
        label: ground-truth mask of the same shape.
        spacing: voxel size in mm per array axis; adds ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
        empty_policy: ``"skip"``, ``"zero"``, ``"one"`` or ``"paper"`` (see the module docstring).

    Returns:
        ``dice``, ``jaccard``, ``hd95``, ``hd95_pooled``, ``asd`` in voxels and, when ``spacing`` is given,
        ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
    """
    _check_policy(empty_policy)
    p, g = _masks(pred, label)
    units: list[tuple[str, list[float] | None]] = [("", None)]
    if spacing is not None:
        sp = [float(s) for s in spacing]
        if len(sp) != p.ndim:
            raise ValueError(f"spacing {sp} does not match the {p.ndim} spatial axes of the masks.")
        units.append(("_mm", sp))
    keys = ["dice", "jaccard"] + [f"{m}{u}" for u, _ in units for m in _DISTANCES]
    p_any, g_any = bool(p.any()), bool(g.any())
    if empty_policy == "paper" and not p_any:  # CrossMatch LA: an empty prediction scores 0 everywhere
        return dict.fromkeys(keys, 0.0)
    out: dict[str, float] = {}
    if not p_any and not g_any:
        out["dice"] = out["jaccard"] = {"skip": math.nan, "zero": 0.0, "one": 1.0}[empty_policy]
    else:
        tp, tg = torch.as_tensor(p)[None, None].float(), torch.as_tensor(g)[None, None].float()
        out["dice"] = float(compute_dice(tp, tg, include_background=True, ignore_empty=False))
        out["jaccard"] = float(compute_iou(tp, tg, include_background=True, ignore_empty=False))
    edges = get_mask_edges(p, g, crop=True) if p_any and g_any else None
    for unit, sp in units:
        if edges is None:
            out.update({f"{m}{unit}": math.nan for m in _DISTANCES})
            continue
        d_pg, d_gp = _surface_distances(edges, sp)
        # exactly MONAI's compute_hausdorff_distance(percentile=95) and compute_average_surface_distance
        out[f"hd95{unit}"] = float(torch.max(torch.quantile(d_pg, 0.95), torch.quantile(d_gp, 0.95)))
        out[f"hd95_pooled{unit}"] = float(np.percentile(torch.cat([d_pg, d_gp]).double().numpy(), 95.0))
        out[f"asd{unit}"] = float(d_pg.mean())
    return {k: out[k] for k in keys}


def binary_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor,
                   spacing: Sequence[float] | None = None, empty_policy: str = "skip") -> dict[str, float]:
    """Metrics of the foreground class 1 of two class-index maps (or boolean masks).

    Args:
        pred: predicted class indices, spatial axes only (``(X, Y)`` or ``(X, Y, Z)``), no channel axis.
        label: ground-truth class indices of the same shape.
        spacing: voxel size in mm per array axis; adds ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
        empty_policy: ``"skip"``, ``"zero"``, ``"one"`` or ``"paper"`` (see the module docstring).

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
        spacing: voxel size in mm per array axis, or ``None``.
        empty_policy: see :func:`class_metrics`.

    Returns:
        ``{class_index: metrics}``.
    """
    pred, label = _as_numpy(pred), _as_numpy(label)
    return {c: class_metrics(pred == c, label == c, spacing, empty_policy) for c in range(1, int(num_classes))}


def _column_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """Column suffixes of the foreground classes ``1..num_classes-1``: lower-case names with ``_`` separators.

    ``class_names`` lists all classes (background first) or only the foreground ones; default ``class_<c>``.
    """
    if class_names is None:
        names = [f"class_{c}" for c in range(1, num_classes)]
    elif len(class_names) == num_classes:
        names = list(class_names)[1:]
    elif len(class_names) == num_classes - 1:
        names = list(class_names)
    else:
        raise ValueError(f"class_names {list(class_names)} must name {num_classes} classes (background first) "
                         f"or the {num_classes - 1} foreground classes.")
    clean = [re.sub(r"[^0-9a-z]+", "_", str(n).strip().lower()).strip("_") or f"class_{c}"
             for c, n in enumerate(names, start=1)]
    if len(set(clean)) != len(clean):
        raise ValueError(f"class names {names} are not distinct as column names {clean}.")
    return clean


def segmentation_metrics(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, num_classes: int = 2,
                         class_names: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
                         empty_policy: str = "skip") -> dict[str, float]:
    """Flat metric row of two class-index maps (2D or 3D), for a report.

    Args:
        pred: predicted class indices, spatial axes only.
        label: ground-truth class indices of the same shape.
        num_classes: classes including the background.
        class_names: names of all classes (background first) or of the foreground classes; they name the
            per-class columns, lower-cased with ``_`` separators (default ``class_<c>``).
        spacing: voxel size in mm per array axis, or ``None`` (voxel units only).
        empty_policy: see :func:`class_metrics`.

    Returns:
        Binary task (``num_classes == 2``): the plain keys of :func:`class_metrics`. Several classes: first the
        mean over the foreground classes under the plain keys (``dice``, ``jaccard``, ...: the average the
        CrossMatch paper reports; NaN values left out, NaN when none is left), then ``<metric>_<class name>`` for
        every class (``dice_right_ventricle``, ``hd95_mm_left_ventricle``...).
    """
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background included), got {num_classes}.")
    pred, label = _as_numpy(pred), _as_numpy(label)
    if num_classes == 2:
        return class_metrics(pred == 1, label == 1, spacing, empty_policy)
    names = _column_names(num_classes, class_names)
    per_class = multiclass_metrics(pred, label, num_classes, spacing, empty_policy)
    out: dict[str, float] = {}
    for key in per_class[1]:
        vals = [m[key] for m in per_class.values() if math.isfinite(m[key])]
        out[key] = float(np.mean(vals)) if vals else math.nan
    for c, metrics in per_class.items():
        out.update({f"{k}_{names[c - 1]}": v for k, v in metrics.items()})
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of the finite values of every numeric column.

    Args:
        rows: per-volume metric dicts (non-numeric entries such as ``id`` are ignored).

    Returns:
        ``{column: {"mean", "std", "count"}}``; ``std`` is the population standard deviation (numpy's default,
        ``ddof=0``); NaN/inf values are left out, mean and std are NaN when none is left.
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


def _picture_slices(label: np.ndarray, pred: np.ndarray, num_slices: int) -> list[int]:
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


def _volume_picture(image: np.ndarray, label: np.ndarray, pred: np.ndarray, slices: Sequence[int],
                    gap: int = 2) -> np.ndarray:
    """Slices ``slices`` of the last axis side by side (RGB ``(Y, sum X + gaps, 3)``): grey image, ground-truth
    contours (all class boundaries) in green, predicted contours in red on top.

    Intensities are windowed to the volume's 0.5-99.5th percentiles and rescaled to 0-255 (z-scored MRI holds
    negative values and bright outliers). Each slice ``[:, :, z]`` is transposed to rows = second array axis.
    """
    from skimage.segmentation import find_boundaries  # noqa: PLC0415  (only for pictures)

    img = image.astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    grey = (np.clip((img - lo) / (hi - lo + 1e-8), 0, 1) * 255).astype(np.uint8)
    panels = []
    for z in slices:
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


class VolumeReport:
    """Per-volume metrics of an evaluator run, written as CSV, a JSON summary, a logged table and pictures.

    The evaluator's post-processing must leave ``pred`` as an argmax map ``(1, X, Y, Z)`` (or one-hot
    ``(C, X, Y, Z)``) on the volume's own grid and ``label`` as ``(1, X, Y, Z)`` class indices (or one-hot); 2D
    ``(1, H, W)`` items work the same way. Volumes are identified by the file name of ``image`` (MONAI's
    ``filename_or_obj`` meta, extensions dropped; a repeated name gets a ``~k`` suffix).

    Distances in mm use the voxel spacing (ordered like the array axes), looked up in this order: the output
    item's ``spacing_key``, the batch item's ``spacing_key`` (a datalist entry ``"spacing": [sx, sy, sz]``), the
    image meta of a reader (the spacing of the MetaTensor's affine, which follows MONAI's spatial transforms, when
    the meta holds ``pixdim``/``original_affine``; else ``pixdim[1:]``), then the ``spacing`` argument. A
    non-finite or non-positive spacing counts as unknown. ``use_spacing=False`` (a dataset with
    ``spacing_known: false``) reports voxel units only.

    Files in ``output_dir``: ``metrics_per_volume.csv`` (one row per volume: ``id``, the metrics of
    :func:`segmentation_metrics`, ``spacing_mm``), ``metrics_summary.json`` (strict JSON, NaN -> null: mean, std,
    count per column, definitions, units, empty policy, counts) and ``pictures/<id>.png`` for the first
    ``max_pictures`` volumes (``num_slices`` slices along the last axis through the label's extent, ground truth
    green, prediction red). ``engine.state.metrics`` receives ``test_<column>`` = the mean of each column.

    Args:
        output_dir: where the CSV, the JSON summary and ``pictures/`` go.
        num_classes: classes of the segmentation, background included.
        class_names: names of all classes (background first) or of the foreground ones (multi-class columns).
        empty_policy: ``"skip"``, ``"zero"``, ``"one"`` or ``"paper"`` (see :mod:`scripts.evaluation`).
        max_pictures: volumes to draw (0 for none).
        num_slices: slices per picture.
        spacing: voxel size in mm used when neither the items nor the image meta carry one.
        use_spacing: False: voxel units only, whatever the data carries.
        spacing_key: item key holding the voxel spacing.
        name: a name for the log lines and the summary (default: the output folder name).
    """

    def __init__(self, output_dir: str, num_classes: int = 2, class_names: Sequence[str] | None = None,
                 empty_policy: str = "skip", max_pictures: int = 8, num_slices: int = 3,
                 spacing: Sequence[float] | None = None, use_spacing: bool = True, spacing_key: str = "spacing",
                 name: str | None = None) -> None:
        _check_policy(empty_policy)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2 (background included), got {num_classes}.")
        if int(num_slices) < 1:
            raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else None
        self.columns = _column_names(self.num_classes, self.class_names)  # validates the names early
        self.empty_policy = empty_policy
        self.max_pictures = int(max_pictures)
        self.num_slices = int(num_slices)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.use_spacing = bool(use_spacing)
        self.spacing_key = spacing_key
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

    def _spacing(self, item: Mapping, image: Any, ndim: int, batch_item: Mapping | None = None) -> list[float] | None:
        """Voxel size of the evaluated grid in mm (see the class docstring), or None (voxel units only)."""
        if not self.use_spacing:
            return None
        meta = getattr(image, "meta", None) or {}
        candidates = (
            lambda: _spacing_list(item.get(self.spacing_key)),
            lambda: _spacing_list((batch_item or {}).get(self.spacing_key)),
            lambda: self._meta_spacing(meta, image, ndim),
            lambda: self.spacing,
        )
        spacing = next((s for s in (c() for c in candidates) if s is not None), None)
        if spacing is None:
            return None
        if len(spacing) == 1:
            spacing = spacing * ndim
        if len(spacing) != ndim:
            raise ValueError(f"spacing {spacing} does not match the {ndim} spatial axes of the prediction.")
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            return None
        return [float(s) for s in spacing]

    def _identify(self, item: Mapping, image: Any) -> str:
        meta = getattr(image, "meta", None) or getattr(item["pred"], "meta", None) or {}
        src = meta.get("filename_or_obj") or ""
        src = src[0] if isinstance(src, (list, tuple)) and src else src
        ident = Path(str(src)).name.split(".")[0] or f"volume_{len(self.rows):04d}"
        base, k = ident, 1
        while ident in self._ids:  # one row and one picture per volume even if names repeat
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
        """Compute the metrics of every volume in ``engine.state.output`` (decollated items, or a batch dict)."""
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
            spacing = self._spacing(item, image, pred.ndim, batch_item)
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
        slices = _picture_slices(label, pred, self.num_slices) if label.ndim == 3 else [0]
        (self.output_dir / "pictures").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_volume_picture(img, label, pred, slices)).save(self.output_dir / "pictures" / f"{ident}.png")

    def _table(self, summary: Mapping[str, Mapping[str, float]]) -> str:
        """Markdown table: one row per metric; the mean column, then one column per class when several."""
        def cell(key: str) -> str:
            v = summary.get(key)
            return "-" if v is None or v["count"] == 0 else f"{v['mean']:.4f} ± {v['std']:.4f}"

        base = [k for k in summary if k in METRICS or (k.endswith("_mm") and k[:-3] in METRICS)]
        head = f"| {self.name} ({len(self.rows)} volumes) | mean ± std | n |"
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
            self.logger.warning(f"{self.name}: no volume was evaluated.")
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        columns: list[str] = []
        for row in self.rows:
            columns.extend(k for k in row if k not in columns)
        columns.append(columns.pop(columns.index("spacing_mm")))
        with open(self.output_dir / "metrics_per_volume.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        summary = summarize(self.rows)
        report = {
            "name": self.name,
            "num_volumes": len(self.rows),
            "empty_policy": self.empty_policy,
            "units": "voxels; *_mm in millimetres (voxel spacing of the evaluated grid)",
            "classes": dict(enumerate(self.columns, start=1)),
            "counts": {
                "volumes": len(self.rows),
                "volumes_with_spacing": sum(1 for r in self.rows if r["spacing_mm"]),
                "empty_prediction": dict(zip(self.columns, self.empty_pred)),
                "empty_label": dict(zip(self.columns, self.empty_label)),
            },
            "definitions": {
                "dice": "2|P∩G| / (|P|+|G|) on the whole volume (MONAI compute_dice)",
                "jaccard": "|P∩G| / |P∪G| on the whole volume (MONAI compute_iou)",
                "hd95": "MONAI: 95th percentile of each directed surface distance set, then the maximum",
                "hd95_pooled": "95th percentile of the pooled two-way surface distances (medpy hd95, CrossMatch tables)",
                "asd": "mean surface distance, directed prediction -> ground truth (MONAI/medpy default)",
                "surface": "voxels removed by one face-connected erosion",
                "class_mean": "plain columns of a multi-class task: mean over the foreground classes of the finite values",
                "std": "population standard deviation (ddof=0) over the volumes with a finite value",
                "count": "volumes with a finite value (NaN ones are left out of the mean)",
                "empty_policy": {
                    "skip": "both masks empty: Dice/Jaccard NaN; either empty: distances NaN; NaN left out of means",
                    "zero": "as skip, but Dice/Jaccard of an empty/empty pair are 0",
                    "one": "as skip, but Dice/Jaccard of an empty/empty pair are 1",
                    "paper": "empty prediction: every metric 0, averaged in (CrossMatch LA); else as skip",
                }[self.empty_policy],
            },
            "metrics": summary,
        }
        # strict JSON: NaN (no finite value) is written as null
        text = json.dumps(_json_safe(report), indent=2, allow_nan=False, ensure_ascii=False)
        (self.output_dir / "metrics_summary.json").write_text(text + "\n", encoding="utf-8")
        for k, v in summary.items():
            engine.state.metrics[f"test_{k}"] = v["mean"]
        self.logger.info(self._table(summary))
        self.logger.info(f"per-volume metrics: {self.output_dir / 'metrics_per_volume.csv'}; summary: "
                         f"{self.output_dir / 'metrics_summary.json'}; pictures: {self.output_dir / 'pictures'}")
