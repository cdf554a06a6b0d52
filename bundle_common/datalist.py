# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Datalists of the prepared dataset format: the structure checks, the per-file checks and the loading of lists.

The format (``docs/dataset_format.md``) is a MONAI datalist JSON with ``labeled``, ``unlabeled``, ``validation`` and
``test`` lists, paths relative to the datalist, and an optional global ``spacing`` (``spacing_known: false`` for
data without a physical size). Every problem a user can make with their data is reported before training starts,
as a :class:`.errors.DataError` naming the file and what is wrong. Reading and checking one image or volume is the
caller's (``check_item``): 2D images and 3D volumes need different readers (:mod:`.images2d`, :mod:`.volumes`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from .errors import DataError

__all__ = [
    "MIN_SIDE",
    "SPLITS",
    "UNLABELED_SPLITS",
    "check_datalist",
    "check_image_content",
    "check_label_values",
    "load_datalist",
    "load_datalists",
    "resolve_items",
]

logger = logging.getLogger(__name__)

SPLITS = ("labeled", "unlabeled", "validation", "test", "synthetic")
"""The lists of a prepared datalist; ``synthetic`` (generated unlabelled images, ``mgcc_us``) is optional."""

UNLABELED_SPLITS = ("unlabeled", "synthetic")
"""The lists whose items have no label."""

ItemCheck = Callable[[dict, str, int, int], Any]
"""``check_item(item, split, num_classes, spatial_dims)``: read one item's files and raise DataError on a problem;
it returns the class values its label holds (or None without a label)."""

MIN_SIDE = 8
"""The smallest image side (pixels or voxels) a bundle takes: a smaller image holds no structure to learn."""


def check_image_content(image: Any, path: str | os.PathLike, what: str, spatial_shape: Sequence[int]) -> None:
    """Refuse a degenerate image: one of constant intensity (all black, a uniform grey) or one too small.

    A constant image carries nothing to learn and breaks intensity augmentations (histogram equalisation divides
    by its range); an image whose side (in-plane: the first two axes) is under :data:`MIN_SIDE` holds no structure.

    Raises:
        DataError: naming the file and the problem.
    """
    small = [int(n) for n in list(spatial_shape)[:2] if int(n) < MIN_SIDE]  # in-plane (a volume may have few slices)
    if small:
        raise DataError(f"{what} is {' x '.join(str(int(n)) for n in spatial_shape)} pixels/voxels, smaller than "
                        f"{MIN_SIDE} on a side: nothing to segment; remove it from the datalist: {path}")
    arr = np.asarray(image)
    if arr.size and float(arr.min()) == float(arr.max()):
        raise DataError(f"{what} has one constant intensity ({float(arr.min()):g} everywhere): it holds no image "
                        f"content (and breaks the intensity augmentations); remove or replace it: {path}")

_CACHE_SIZE = 32
_CHECKED: OrderedDict[tuple, tuple[dict, tuple]] = OrderedDict()


def resolve_items(items: list[dict], base: Path) -> list[dict]:
    """Copies of ``items`` with their relative ``image``/``label`` paths made absolute against ``base``."""
    out = []
    for item in items:
        d = dict(item)
        for k in ("image", "label"):
            if k in d and isinstance(d[k], str) and not os.path.isabs(d[k]):
                d[k] = os.path.normpath(str(base / d[k]))
        out.append(d)
    return out


def _fingerprint(content: dict, base: Path) -> tuple:
    """``(path, size, mtime)`` of every file the datalist names: a cached check is redone when a file changed."""
    out = []
    for split in SPLITS:
        for item in resolve_items(content.get(split) or [], base):
            for k in ("image", "label"):
                if isinstance(item.get(k), str):
                    try:
                        st = os.stat(item[k])
                        out.append((item[k], st.st_size, st.st_mtime_ns))
                    except OSError:
                        out.append((item[k], -1, -1))
    return tuple(out)


def _check_structure(content: Any, path: Path, required: Sequence[str], spatial_dims: int) -> None:
    if not isinstance(content, dict):
        raise DataError(
            f"datalist must be a JSON object with {', '.join(SPLITS[:4])} lists, got a {type(content).__name__}: {path}"
        )
    for split in required:
        if not content.get(split):
            raise DataError(f"the '{split}' list of {path} is missing or empty: it needs at least one item.")
    split_notes = content.get("split") if isinstance(content.get("split"), dict) else {}
    shared_eval = split_notes.get("test_from") == "val" or split_notes.get("val_from") == "test"
    owner: dict[str, str] = {}
    base = path.parent
    for split in SPLITS:
        items = content.get(split) or []
        if not isinstance(items, list):
            raise DataError(f"'{split}' in {path} must be a list of items, got {type(items).__name__}.")
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not item["image"]:
                raise DataError(f"an item of '{split}' in {path} has no 'image' path: {item!r}")
            if split not in UNLABELED_SPLITS and not (isinstance(item.get("label"), str) and item["label"]):
                raise DataError(f"an item of '{split}' in {path} has no 'label' path: {item['image']}")
            image = os.path.normpath(str(base / item["image"]))
            idents = [("image", image, item["image"])]
            if "case" in item:
                idents.append(("case", str(item["case"]), item["case"]))
            for kind, ident, shown in idents:
                prev = owner.setdefault(f"{kind} {ident}", split)
                if prev != split and not (shared_eval and {prev, split} == {"validation", "test"}):
                    raise DataError(
                        f"{kind} {shown} is in both the '{prev}' and the '{split}' lists of {path}: splits must not "
                        "overlap (no case may be both labelled and unlabelled, or used for training and evaluation)."
                    )
    if content.get("spacing_known", True) is not False:
        spacings = [("the global 'spacing'", content.get("spacing"))]
        spacings += [(f"the 'spacing' of {it['image']}", it["spacing"]) for s in SPLITS for it in content.get(s) or []
                     if "spacing" in it]
        for what, sp in spacings:
            if sp is None:
                continue
            ok = isinstance(sp, list) and len(sp) == spatial_dims and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in sp)
            if not ok:
                raise DataError(
                    f"{what} in {path} must be {spatial_dims} positive numbers (mm), got {sp!r} "
                    "(or set \"spacing_known\": false)."
                )


def check_label_values(label: np.ndarray, num_classes: int, what: str, path: str | os.PathLike) -> np.ndarray:
    """The distinct values of ``label``, which must be class indices ``0..num_classes-1``.

    Raises:
        DataError: naming the values outside the declared classes (first 8, as integers where they are), the
            file and what to do (0/255 masks are converted by ``scripts/prepare_data.py``).
    """
    values = np.unique(label)
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise DataError(f"{what} has data type {values.dtype}; expected class indices: {path}")
    values = values.astype(np.float64)
    bad = values[(values < 0) | (values >= num_classes) | (values != np.round(values)) | ~np.isfinite(values)]
    if bad.size:
        shown = [int(v) if np.isfinite(v) and v == np.round(v) else float(v) for v in bad[:8]]
        raise DataError(
            f"{what} has values {shown} outside the declared classes 0..{num_classes - 1}: {path} (labels must be "
            "integer class indices; prepare 0/255 masks with scripts/prepare_data.py)"
        )
    return values


def _check_classes(present: set[int], num_classes: int, class_names: Sequence[str] | None, path: Path) -> None:
    """Warn, by name, about declared foreground classes that no label of the datalist holds."""
    if not present:
        return
    names = list(class_names) if class_names and len(class_names) == num_classes else [str(c) for c in range(num_classes)]
    absent = [f"{c} ({names[c]})" for c in range(1, num_classes) if c not in present]
    if absent:
        logger.warning(
            f"the config declares {num_classes} classes ({', '.join(names)}) but no label of {path} holds class "
            f"{', '.join(absent)}: check num_classes and class_names (their metrics will be empty)."
        )


def check_datalist(
    datalist_file: str | os.PathLike,
    check_item: ItemCheck,
    num_classes: int = 2,
    spatial_dims: int = 3,
    required: Sequence[str] = ("labeled",),
    check_files: bool = True,
    prepare_hint: str = "python scripts/prepare_data.py",
    class_names: Sequence[str] | None = None,
) -> dict:
    """Check a datalist and the files it names; return the parsed JSON.

    Checks: valid JSON object, the ``required`` lists present and non-empty, every item with an image (and a label
    outside ``unlabeled``), no image or case in two lists (validation and test may share cases when the datalist
    records ``"test_from": "val"``), valid spacing, and for each item (``check_files``) ``check_item``. The result
    is cached per datalist (path, modification time, arguments) and redone when a named file changed.

    Args:
        datalist_file: the datalist JSON.
        check_item: the bundle's check of one item's files.
        num_classes: classes a label may hold, background included.
        spatial_dims: 2 for images, 3 for volumes (the length of a spacing).
        required: lists that must be present and non-empty.
        check_files: read and check every file once (cached); False checks the JSON only.
        prepare_hint: the command that prepares a dataset, for the error of a missing datalist.
        class_names: the declared classes' names (background first), for the warning about a class no label holds.

    Raises:
        DataError: naming the file and the problem.
    """
    path = Path(datalist_file)
    if not path.is_file():
        raise DataError(
            f"datalist not found: {path}. Prepare a dataset with `{prepare_hint}` (see docs/dataset_format.md) and "
            "pass its folder as --dataset_dir."
        )
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, int(num_classes), int(spatial_dims), tuple(required),
           bool(check_files), getattr(check_item, "__qualname__", repr(check_item)))
    if key in _CHECKED:
        content, fingerprint = _CHECKED[key]
        if not check_files or _fingerprint(content, path.parent) == fingerprint:
            _CHECKED.move_to_end(key)
            return content
    try:
        content = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise DataError(f"datalist is not a text (JSON) file ({e.reason}): {path}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"datalist is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): {path}") from None
    _check_structure(content, path, required, spatial_dims)
    if check_files:
        base = path.parent
        present: set[int] = set()
        for split in SPLITS:
            items = content.get(split) or []
            if items:
                logger.info(f"checking {len(items)} {split} items of {path}")
            for item in resolve_items(items, base):
                values = check_item(item, split, int(num_classes), int(spatial_dims))
                if values is not None:
                    present.update(int(v) for v in values)
        _check_classes(present, int(num_classes), class_names, path)
        logger.info(f"datalist {path}: all files read and checked")
    _CHECKED[key] = (content, _fingerprint(content, path.parent) if check_files else ())
    while len(_CHECKED) > _CACHE_SIZE:
        _CHECKED.popitem(last=False)
    return content


def load_datalist(
    datalist_file: str | os.PathLike,
    key: str,
    check_item: ItemCheck,
    num_classes: int = 2,
    spatial_dims: int = 3,
    check_files: bool = True,
    limit: int | None = None,
    prepare_hint: str = "python scripts/prepare_data.py",
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """The ``key`` list of a datalist, with absolute paths, after checking the whole datalist.

    Each item carries ``"spacing"`` (its own, else the datalist's global one) unless the datalist says
    ``"spacing_known": false``. An absent or empty list gives ``[]``; ``limit`` keeps the first items only.
    """
    datalist_file = str(datalist_file)
    content = check_datalist(datalist_file, check_item, num_classes=num_classes, spatial_dims=spatial_dims,
                             check_files=check_files, prepare_hint=prepare_hint, class_names=class_names)
    if not content.get(key):
        return []
    items = load_decathlon_datalist(datalist_file, is_segmentation=True, data_list_key=key)
    spacing = content.get("spacing")
    for item in items:
        if content.get("spacing_known", True) is False:
            item.pop("spacing", None)  # distances in pixels/voxels only
        elif spacing is not None:
            item.setdefault("spacing", list(spacing))  # the dataset's spacing, unless an item has its own
    return items[:limit] if limit else items


def load_datalists(load: Callable[..., list[dict]], keys: Sequence[str] = SPLITS, limits: dict | None = None,
                   **kwargs: Any) -> dict[str, list[dict]]:
    """Every list a workflow needs, from one call: ``{key: load(key=key, limit=limits.get(key), **kwargs)}``.

    A config builds its lists with one component instead of one near-copy per list, e.g.::

        datalists: {_target_: scripts.common.datalist.load_datalists,
                    load: {_target_: scripts.common.volumes.load_datalist, _mode_: callable}, dataset_dir: ...}
        train#dataset#data: "$@datalists['labeled']"
    """
    limits = dict(limits or {})
    unknown = sorted(set(limits) - set(keys))
    if unknown:
        raise ValueError(f"limits name lists {unknown} that are not loaded; the lists are {list(keys)}.")
    return {key: load(key=key, limit=limits.get(key), **kwargs) for key in keys}
