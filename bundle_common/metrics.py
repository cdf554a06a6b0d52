# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Segmentation metrics of class-index maps, 2D or 3D: Dice, IoU, HD95 (MONAI's and pooled), ASD, in voxels and mm.

Metrics are MONAI's on the whole image or volume: ``compute_dice``, ``compute_iou``, HD95 as
``compute_hausdorff_distance(percentile=95)`` (the 95th percentile of each directed surface-distance set, then the
larger) and ASD as ``compute_average_surface_distance`` (directed prediction -> ground truth, as medpy's ``asd``). A
pooled-percentile HD95, ``hd95_pooled`` (the 95th percentile of the pooled two-way surface distances, medpy's
``hd95``, used by the CrossMatch tables), is reported beside MONAI's. The distances are computed once per item,
class and unit from MONAI's ``get_mask_edges`` and ``get_surface_distance`` (the building blocks of those MONAI
functions, which give identical values), so the three distance metrics cost one edge extraction and two
nearest-surface queries.

Surfaces are the mask voxels removed by one erosion with the face-connected structuring element, the definition
MONAI (``get_mask_edges``) and medpy share, so ``hd95`` and ``hd95_pooled`` differ only in how the two directed
distance sets are combined.

Empty masks (``empty_policy``), per class:

- ``"skip"``: when prediction and ground truth are both empty, Dice and IoU are NaN; HD95, pooled HD95 and ASD
  are NaN whenever either mask is empty. NaN values are left out of every mean (class means and summaries).
- ``"zero"``: as ``"skip"``, but Dice and IoU of an empty/empty pair are 0 (and averaged in; the Switch
  reference's torchmetrics scores them so).
- ``"one"``: as ``"skip"``, but Dice and IoU of an empty/empty pair are 1 (and averaged in).
- ``"paper"``: the CrossMatch LA protocol: when the *prediction* is empty (whatever the ground truth), every
  metric (``dice``, ``iou``, ``hd95``, ``hd95_pooled``, ``asd`` and their ``*_mm`` variants) is 0 and is
  averaged in. A non-empty prediction with an empty ground truth has Dice and IoU 0 and NaN distances
  (left out), since the reference never meets that case (medpy would raise).

In every policy a non-empty prediction against an empty ground truth, or the reverse, has Dice and IoU 0.
"""


from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from monai.metrics.utils import get_mask_edges, get_surface_distance

__all__ = [
    "EMPTY_POLICIES",
    "METRICS",
    "binary_metrics",
    "check_policy",
    "class_metrics",
    "column_names",
    "json_safe",
    "multiclass_metrics",
    "pooled_hd95",
    "segmentation_metrics",
    "summarize",
]

EMPTY_POLICIES = ("skip", "zero", "one", "paper")
"""Handling of empty masks; see the module docstring."""

METRICS = ("dice", "iou", "hd95", "hd95_pooled", "asd")
"""The metrics of one class, in column order (distances also as ``<name>_mm`` when the spacing is known)."""

_DISTANCES = ("hd95", "hd95_pooled", "asd")


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_policy(empty_policy: str) -> None:
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
        ``dice``, ``iou``, ``hd95``, ``hd95_pooled``, ``asd`` in voxels and, when ``spacing`` is given,
        ``hd95_mm``, ``hd95_pooled_mm``, ``asd_mm``.
    """
    check_policy(empty_policy)
    p, g = _masks(pred, label)
    units: list[tuple[str, list[float] | None]] = [("", None)]
    if spacing is not None:
        sp = [float(s) for s in spacing]
        if len(sp) != p.ndim:
            raise ValueError(f"spacing {sp} does not match the {p.ndim} spatial axes of the masks.")
        units.append(("_mm", sp))
    keys = ["dice", "iou"] + [f"{m}{u}" for u, _ in units for m in _DISTANCES]
    p_any, g_any = bool(p.any()), bool(g.any())
    if empty_policy == "paper" and not p_any:  # CrossMatch LA: an empty prediction scores 0 everywhere
        return dict.fromkeys(keys, 0.0)
    out: dict[str, float] = {}
    if not p_any and not g_any:
        out["dice"] = out["iou"] = {"skip": math.nan, "zero": 0.0, "one": 1.0}[empty_policy]
    else:
        tp, tg = torch.as_tensor(p)[None, None].float(), torch.as_tensor(g)[None, None].float()
        out["dice"] = float(compute_dice(tp, tg, include_background=True, ignore_empty=False))
        out["iou"] = float(compute_iou(tp, tg, include_background=True, ignore_empty=False))
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


def column_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
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
        mean over the foreground classes under the plain keys (``dice``, ``iou``, ...: the average the
        CrossMatch paper reports; NaN values left out, NaN when none is left), then ``<metric>_<class name>`` for
        every class (``dice_right_ventricle``, ``hd95_mm_left_ventricle``...).
    """
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background included), got {num_classes}.")
    pred, label = _as_numpy(pred), _as_numpy(label)
    if num_classes == 2:
        return class_metrics(pred == 1, label == 1, spacing, empty_policy)
    names = column_names(num_classes, class_names)
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


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

