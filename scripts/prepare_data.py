# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Convert the dataset layouts users have into the prepared format of ``docs/dataset_format.md``.

Run as a file (it is a repository tool, not a package, and imports no bundle code)::

    python scripts/prepare_data.py busi   --source ../shared/data/BUSI --output data/busi
    python scripts/prepare_data.py ddti   --source ../shared/data/DDTI --output data/ddti
    python scripts/prepare_data.py hc18   --source ../shared/data/HC18 --output data/hc18
    python scripts/prepare_data.py switch --source /data/BUSI --output data/busi_switch --labeled_ratio 0.05
    python scripts/prepare_data.py folder --images imgs/ --labels masks/ --output data/mine
    python scripts/prepare_data.py la     --source ../shared/data/LA --output data/la --num_labeled 8
    python scripts/prepare_data.py acdc   --source ../shared/data/ACDC --output data/acdc --labeled_patients 3
    python scripts/prepare_data.py nifti  --images imagesTr/ --labels labelsTr/ --output data/mine3d
    python scripts/prepare_data.py nifti  --msd Task02_Heart/dataset.json --output data/heart

Every command writes ``images/<id>``, ``labels/<id>`` and ``datalist.json`` under ``--output`` and
returns the path of ``datalist.json``. The output folder must be empty (or absent) unless
``--overwrite True``; nothing is ever deleted (an overwrite replaces files of the same name, and
files of an earlier run that are not in the new datalist stay on disk, unreferenced).

Splits:

* Sources without given splits (``busi``, ``ddti``, ``hc18``, ``folder``, ``nifti``) are split by
  case with a seeded shuffle: ``--test_ratio`` and ``--val_ratio`` are fractions of all cases,
  ``--labeled_ratio`` a fraction of the remaining training cases, the rest is unlabelled. Every
  list asked for (ratio > 0) gets at least one case when there are enough cases.
* ``switch`` keeps the file order of ``train.txt`` (the first floor(ratio * N) names are labelled).
* ``la`` and ``acdc`` use their list files. When a list for validation or test is absent,
  ``--test_from`` / ``--val_from`` decide: ``none`` (default: the list stays empty and a warning is
  logged), ``val`` / ``test`` (reuse the other evaluation list: the two lists then share cases, which
  is recorded as ``split.test_from`` / ``split.val_from`` in the datalist), or ``split`` (divide the
  available evaluation cases into validation and test with the seed, in proportion to
  ``--val_ratio`` : ``--test_ratio``).

Bad inputs raise :class:`DatasetPreparationError` (a ``ValueError``) naming the offending file; the
command line prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shlex
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cli_args import fire_cli

LOG = logging.getLogger("prepare_data")

LIST_KEYS = ("labeled", "unlabeled", "validation", "test")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
IMAGE_3D_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LA_SPACING = (0.625, 0.625, 0.625)
ACDC_PRESETS = {
    1: ("099",),
    3: ("038", "050", "099"),
    7: ("021", "038", "049", "050", "058", "099", "100"),
}
ACDC_LABELS = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, Image.DecompressionBombError)


class DatasetPreparationError(ValueError):
    """A source dataset cannot be converted; the message names the offending file and the problem."""


@dataclass
class Item:
    """One image (2D) or volume (3D) to convert.

    Attributes:
        uid: output file stem, unique in the dataset.
        case: grouping unit for the splits (patient, subject or image).
        image: the source image file (named in messages).
        read: returns ``(image, label_or_None)`` for 2D or ``(image, label_or_None, affine)`` for 3D.
        label: the source label file(s) when known, for messages.
        has_label: whether the item can go to a labelled list.
        extra: additional keys copied into the datalist entry (e.g. ``spacing``).
    """

    uid: str
    case: str
    image: Path
    read: Callable[[], tuple]
    label: Path | None = None
    has_label: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Meta:
    """Description keys of ``datalist.json`` other than the lists and the split."""

    name: str
    description: str
    modality: str
    dimensions: int
    labels: dict[str, str]
    spacing: list[float] | None
    spacing_known: bool
    source: dict[str, str]


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _error(path: Path | str, problem: str) -> DatasetPreparationError:
    """Build a :class:`DatasetPreparationError` whose message starts with the file name."""
    return DatasetPreparationError(f"{path}: {problem}")


def _check_dir(path: str | Path | None, what: str) -> Path:
    """Return ``path`` as an absolute folder path, or raise when it is missing."""
    if path is None or str(path) == "":
        raise DatasetPreparationError(f"no {what} folder given")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise _error(folder, f"{what} folder does not exist")
    return folder


def _check_file(path: Path, what: str) -> None:
    """Raise when ``path`` is not a non-empty file."""
    if not path.is_file():
        raise _error(path, f"{what} file is missing")
    if path.stat().st_size == 0:
        raise _error(path, f"{what} file is empty (0 bytes)")


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (no banker's rounding)."""
    return int(math.floor(value + 0.5))


def _read_id_list(path: Path) -> list[str]:
    """Read a list file: one entry a line, blank lines and ``#`` comments skipped, order kept."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _unique(values: Iterable[str]) -> list[str]:
    """Deduplicate keeping the first occurrence."""
    return list(dict.fromkeys(values))


def _strip_suffix(name: str, suffixes: Sequence[str]) -> str:
    """Remove the first matching (possibly double) suffix of ``name``."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _safe_id(text: str) -> str:
    """Turn a file stem into an output id (letters, digits, ``_``, ``-`` and ``.``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    if not safe:
        raise DatasetPreparationError(f"cannot derive an id from {text!r}")
    return safe


def _tool_string(command: str, options: dict[str, Any]) -> str:
    """The command line that reproduces a run (for ``source.tool``)."""
    parts = ["scripts/prepare_data.py", command]
    for key, value in options.items():
        if value is not None:
            parts += [f"--{key}", str(value)]
    return shlex.join(parts)


def _class_names(num_classes: int) -> dict[str, str]:
    """Generic label names: background plus ``foreground`` or ``class_k``."""
    if num_classes == 2:
        return {"0": "background", "1": "foreground"}
    return {"0": "background", **{str(k): f"class_{k}" for k in range(1, num_classes)}}


# ---------------------------------------------------------------------------------------------
# 2D reading
# ---------------------------------------------------------------------------------------------


def _open_image(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning every decoding failure into a clear error."""
    _check_file(path, what)
    try:
        img = Image.open(path)
        img.load()
    except _READ_ERRORS as exc:
        raise _error(path, f"cannot read {what} ({type(exc).__name__}: {exc})") from exc
    return img


def read_grey(path: Path) -> np.ndarray:
    """Read an image as 8-bit grey (luminance for colour files, min-max for 16-bit/float files)."""
    img = _open_image(path, "image")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        low, high = float(arr.min()), float(arr.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return np.clip(np.rint((arr - low) * scale), 0, 255).astype(np.uint8)
    if img.mode != "L":
        img = img.convert("RGB").convert("L") if img.mode in ("RGBA", "LA", "PA", "P") else img.convert("L")
    return np.asarray(img, dtype=np.uint8)


def read_mask_foreground(path: Path) -> np.ndarray:
    """Read a binary mask in any common encoding and return its foreground (bool).

    1-bit, grey, 16-bit and float masks: value > 0. RGB: any channel > 0. RGBA/LA/palette with
    transparency: any colour channel > 0 on a pixel that is not fully transparent (an opaque alpha
    channel alone is not foreground).
    """
    img = _open_image(path, "mask")
    if img.mode == "P":
        img = img.convert("RGBA")
    arr = np.asarray(img)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        colour, alpha = arr[..., :-1], arr[..., -1]
        foreground = (colour > 0).any(axis=-1) & (alpha > 0)
        if not foreground.any() and alpha.min() != alpha.max():
            LOG.warning("%s: colour channels are empty; the alpha channel alone is ignored", path)
        return foreground
    if arr.ndim == 3:
        return (arr > 0).any(axis=-1)
    return arr > 0


def read_label_indices(path: Path, num_classes: int) -> np.ndarray:
    """Read a class-index label (uint8): ``{0, 255}`` masks become ``{0, 1}``, small integers stay.

    Raises:
        DatasetPreparationError: colour-coded labels or values outside ``0 .. num_classes - 1``.
    """
    img = _open_image(path, "label")
    arr = np.asarray(img)
    if arr.ndim == 3:
        channels = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        if not (channels == channels[..., :1]).all():
            raise _error(path, "colour-coded labels are not supported (expected class indices or a grey mask)")
        arr = channels[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    values = np.unique(arr)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        arr = (arr > 0).astype(np.uint8)
        values = np.unique(arr)
    if values.size and (values.min() < 0 or values.max() >= num_classes or not np.all(values == np.round(values))):
        raise _error(path, f"label values {values.tolist()[:10]} outside the declared classes 0..{num_classes - 1}")
    return arr.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


def _count(ratio: float, n: int) -> int:
    """Cases for a list of ``ratio`` of ``n``: rounded, and at least one when ``ratio > 0``."""
    if ratio < 0 or ratio > 1:
        raise DatasetPreparationError(f"ratio {ratio} is outside [0, 1]")
    return max(_round_half_up(ratio * n), 1) if ratio > 0 and n > 0 else 0


def split_cases(
    cases: Iterable[str],
    *,
    labeled_ratio: float,
    val_ratio: float,
    test_ratio: float,
    seed: int,
    labeled: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Split cases into the four lists with a seeded shuffle (the one split function of this tool).

    Args:
        cases: the case ids (duplicates ignored; the input order does not matter).
        labeled_ratio: fraction of the training cases (after validation and test) that is labelled.
            Ignored when ``labeled`` is given.
        val_ratio: fraction of all cases for validation.
        test_ratio: fraction of all cases for test.
        seed: seed of the shuffle.
        labeled: fixed labelled cases (kept out of validation and test).

    Returns:
        ``{"labeled": [...], "unlabeled": [...], "validation": [...], "test": [...]}``, each sorted.

    Raises:
        DatasetPreparationError: too few cases for the requested lists.
    """
    pool = sorted(set(cases))
    fixed = sorted(set(labeled)) if labeled is not None else []
    n_total = len(pool)
    pool = [case for case in pool if case not in set(fixed)]
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    n_test, n_val = _count(test_ratio, n_total), _count(val_ratio, n_total)
    n_train = len(order) - n_test - n_val + len(fixed)
    if n_train < 1 or len(order) < n_test + n_val:
        raise DatasetPreparationError(
            f"{n_total} cases are too few for val_ratio={val_ratio} and test_ratio={test_ratio}"
        )
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if labeled is None:
        n_lab = _count(labeled_ratio, n_train)
        if labeled_ratio < 1 and n_train > 1:
            n_lab = min(n_lab, n_train - 1)
        fixed, train = train[:n_lab], train[n_lab:]
    return {"labeled": sorted(fixed), "unlabeled": sorted(train), "validation": sorted(val), "test": sorted(test)}


def _split_eval(
    val: list[str] | None,
    test: list[str] | None,
    *,
    test_from: str,
    val_from: str,
    val_ratio: float,
    test_ratio: float,
    seed: int,
    what: str,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Fill a missing validation or test list from the other one (see the module docstring).

    Returns:
        ``(validation, test, notes)`` where ``notes`` goes into ``datalist.json``'s ``split``.
    """
    for option, value, allowed in (
        ("test_from", test_from, ("none", "val", "split")),
        ("val_from", val_from, ("none", "test", "split")),
    ):
        if value not in allowed:
            raise DatasetPreparationError(f"--{option} must be one of {allowed}, got {value!r}")
    notes: dict[str, Any] = {}
    if val is not None and test is not None:
        return val, test, notes
    if val is None and test is None:
        LOG.warning("%s: no validation or test list found; both stay empty", what)
        return [], [], notes
    if test is None:
        option, mode, have, missing, other = "test_from", test_from, val, "test", "val"
    else:
        option, mode, have, missing, other = "val_from", val_from, test, "validation", "test"
    if mode == "none":
        LOG.warning(
            "%s: no %s list found; it stays empty (use --%s %s or split to fill it)", what, missing, option, other
        )
        filled: list[str] = []
    elif mode == "split":
        if val_ratio + test_ratio <= 0 or len(have) < 2:
            raise DatasetPreparationError(
                f"{what}: cannot split {len(have)} evaluation case(s) with val_ratio={val_ratio}, test_ratio={test_ratio}"
            )
        share = (test_ratio if missing == "test" else val_ratio) / (val_ratio + test_ratio)
        order = [have[i] for i in np.random.default_rng(seed).permutation(len(have))]
        n_move = min(max(_round_half_up(share * len(order)), 1), len(order) - 1)
        filled, have = sorted(order[:n_move]), sorted(order[n_move:])
        notes[option] = "split"
        LOG.info(
            "%s: no %s list found; %d of the %d %s cases moved to it (seed %d)",
            what,
            missing,
            n_move,
            len(order),
            other,
            seed,
        )
    else:
        filled = list(have)
        notes[option] = other
        LOG.warning("%s: no %s list found; reusing the %s cases for it", what, missing, other)
    return (have, filled, notes) if missing == "test" else (filled, have, notes)


def validate_splits(assignment: dict[str, list[str]], *, shared_eval: bool = False) -> None:
    """Check that no case is in two lists and that the labelled list is not empty.

    Args:
        assignment: list name -> case ids.
        shared_eval: allow validation and test to be the same cases (``--test_from val``).

    Raises:
        DatasetPreparationError: on overlap or an empty labelled list.
    """
    if not assignment.get("labeled"):
        raise DatasetPreparationError("the labelled list is empty (raise the labelled ratio/count)")
    for i, first in enumerate(LIST_KEYS):
        for second in LIST_KEYS[i + 1 :]:
            if shared_eval and {first, second} == {"validation", "test"}:
                continue
            common = set(assignment.get(first, [])) & set(assignment.get(second, []))
            if common:
                raise DatasetPreparationError(f"cases in both {first} and {second}: {sorted(common)[:10]}")


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


def _prepare_output(output: str | Path | None, sources: Sequence[Path], overwrite: bool) -> Path:
    """Check the output folder; refuse a non-empty one (unless ``overwrite``) or one overlapping a source."""
    if output is None or str(output) == "":
        raise DatasetPreparationError("no --output folder given")
    out = Path(output).expanduser().resolve()
    for src in sources:
        if out == src or src in out.parents or out in src.parents:
            raise _error(out, f"output folder overlaps the source folder {src}; choose another one")
    if out.exists() and not out.is_dir():
        raise _error(out, "output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise _error(out, "output folder is not empty (pass --overwrite True to write into it)")
        LOG.warning("%s: writing into a non-empty folder (files of the same name are replaced)", out)
    return out


def _write_with_cleanup(write: Callable[[], dict[str, dict[str, str]]], out: Path) -> dict[str, dict[str, str]]:
    """Run a writer into ``out/images`` and ``out/labels``; on failure remove only what this run created.

    Files and folders that existed before the run are never deleted, so a failed run leaves the
    output folder as it was (and can be retried without ``--overwrite``).
    """
    folders = [out, out / "images", out / "labels"]
    new_folders = [folder for folder in folders if not folder.exists()]
    before = {p for folder in folders[1:] if folder.is_dir() for p in folder.iterdir()}
    for folder in folders[1:]:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        return write()
    except BaseException:
        for folder in folders[1:]:
            for path in set(folder.iterdir()) - before:
                path.unlink()
        for folder in reversed(new_folders):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _assign(items: list[Item], assignment: dict[str, list[str]]) -> dict[str, list[Item]]:
    """Distribute items to the lists by case; items of unlisted cases are left out (logged)."""
    by_list: dict[str, list[Item]] = {key: [] for key in LIST_KEYS}
    seen: set[str] = set()
    for key in LIST_KEYS:
        cases = set(assignment.get(key, []))
        for item in items:
            if item.case in cases:
                if key != "unlabeled" and not item.has_label:
                    raise _error(item.image, f"has no label but case {item.case} is in the {key} list")
                by_list[key].append(item)
                seen.add(item.case)
    skipped = sorted({item.case for item in items} - seen)
    if skipped:
        LOG.info("%d case(s) are in no list and are not written: %s", len(skipped), skipped[:10])
    return by_list


def _unique_items(by_list: dict[str, list[Item]]) -> list[Item]:
    """Every item once, in list order (validation and test may share items)."""
    return list({id(item): item for key in LIST_KEYS for item in by_list[key]}.values())


def _progress(done: int, total: int, log_every: int) -> None:
    """Log progress every ``log_every`` items and at the end."""
    if done == total or (log_every > 0 and done % log_every == 0):
        LOG.info("converted %d/%d", done, total)


def write_2d(items: list[Item], out: Path, num_classes: int, log_every: int = 50) -> dict[str, dict[str, str]]:
    """Write 8-bit grey PNG images and uint8 class-index PNG labels.

    Returns:
        uid -> ``{"image": rel_path, "label": rel_path}`` (``label`` only when the item has one).

    Raises:
        DatasetPreparationError: size mismatch or label values outside ``0 .. num_classes - 1``.
    """
    written: dict[str, dict[str, str]] = {}
    for done, item in enumerate(items, 1):
        image, label = item.read()
        entry = {"image": f"images/{item.uid}.png"}
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(out / entry["image"])
        if label is not None:
            _check_label(item, image.shape, label, num_classes)
            entry["label"] = f"labels/{item.uid}.png"
            Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(out / entry["label"])
        written[item.uid] = entry
        _progress(done, len(items), log_every)
    return written


def write_3d(items: list[Item], out: Path, num_classes: int, log_every: int = 10) -> dict[str, dict[str, str]]:
    """Write float32 NIfTI images and uint8 NIfTI labels (axes X, Y, Z; spacing in the affine).

    Returns:
        uid -> ``{"image": rel_path, "label": rel_path}`` (``label`` only when the item has one).
    """
    import nibabel as nib

    written: dict[str, dict[str, str]] = {}
    for done, item in enumerate(items, 1):
        image, label, affine = item.read()
        if image.ndim != 3:
            raise _error(item.image, f"expected a 3D volume, got shape {tuple(image.shape)}")
        entry = {"image": f"images/{item.uid}.nii.gz"}
        nii = nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine)
        nii.header.set_xyzt_units("mm")
        nib.save(nii, out / entry["image"])
        if label is not None:
            _check_label(item, image.shape, label, num_classes)
            entry["label"] = f"labels/{item.uid}.nii.gz"
            seg = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine)
            seg.header.set_xyzt_units("mm")
            nib.save(seg, out / entry["label"])
        written[item.uid] = entry
        _progress(done, len(items), log_every)
    return written


def _check_label(item: Item, shape: tuple[int, ...], label: np.ndarray, num_classes: int) -> None:
    """Raise when a label's size differs from its image or its values are not class indices."""
    where = item.label or item.image
    if tuple(label.shape) != tuple(shape):
        raise _error(where, f"label size {tuple(label.shape)} differs from image {item.image.name} size {tuple(shape)}")
    values = np.unique(label)
    if values.size and (values.min() < 0 or values.max() >= num_classes or not np.all(values == np.round(values))):
        raise _error(where, f"label values {values.tolist()[:10]} outside the declared classes 0..{num_classes - 1}")


def _finish(
    out: Path,
    meta: Meta,
    by_list: dict[str, list[Item]],
    written: dict[str, dict[str, str]],
    split: dict[str, Any],
) -> Path:
    """Build, validate and write ``datalist.json``; log the summary; return its path."""
    datalist: dict[str, Any] = {
        "name": meta.name,
        "description": meta.description,
        "modality": meta.modality,
        "dimensions": meta.dimensions,
        "labels": meta.labels,
        "spacing": meta.spacing,
        "spacing_known": meta.spacing_known,
        "source": meta.source,
    }
    lists: dict[str, list[dict[str, Any]]] = {}
    for key in LIST_KEYS:
        entries = []
        for item in sorted(by_list[key], key=lambda it: it.uid):
            entry: dict[str, Any] = {"image": written[item.uid]["image"]}
            if key != "unlabeled":
                entry["label"] = written[item.uid]["label"]
            entries.append({**entry, "case": item.case, **item.extra})
        lists[key] = entries
    split = {
        **split,
        "counts": {key: len(lists[key]) for key in LIST_KEYS},
        "case_counts": {key: len({entry["case"] for entry in lists[key]}) for key in LIST_KEYS},
    }
    datalist["split"] = split
    datalist.update(lists)
    path = out / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2) + "\n")
    counts = ", ".join(f"{key} {n}" for key, n in split["counts"].items())
    LOG.info("%s: wrote %d images (%s) to %s", meta.name, len(written), counts, path)
    return path


def _run(
    items: list[Item],
    assignment: dict[str, list[str]],
    *,
    out: Path,
    meta: Meta,
    split: dict[str, Any],
    num_classes: int,
    log_every: int,
) -> Path:
    """Validate the split, write the files of every listed item and the datalist."""
    validate_splits(assignment, shared_eval=split.get("test_from") == "val" or split.get("val_from") == "test")
    by_list = _assign(items, assignment)
    todo = _unique_items(by_list)
    if not by_list["labeled"]:
        raise DatasetPreparationError("the labelled list is empty")
    LOG.info("converting %d %dD images into %s", len(todo), meta.dimensions, out)
    writer = write_2d if meta.dimensions == 2 else write_3d
    written = _write_with_cleanup(functools.partial(writer, todo, out, num_classes, log_every), out)
    return _finish(out, meta, by_list, written, split)


def _seeded_split_meta(
    seed: int, group_by: str, labeled_ratio: float, val_ratio: float, test_ratio: float
) -> dict[str, Any]:
    """The ``split`` description of a seeded random split."""
    return {
        "method": "seeded shuffle of cases",
        "seed": seed,
        "group_by": group_by,
        "ratios": {"labeled": labeled_ratio, "validation": val_ratio, "test": test_ratio},
    }


def _eval_ratios(used: bool, val_ratio: float, test_ratio: float) -> dict[str, float | None]:
    """The ``split.ratios`` of a list-based split: the evaluation ratios only when a seeded split used them."""
    return {"labeled": None, "validation": val_ratio if used else None, "test": test_ratio if used else None}


def _require_items(items: list[Item], source: Path) -> None:
    """Raise when a source yielded nothing."""
    if not items:
        raise _error(source, "no images found (empty result)")


# ---------------------------------------------------------------------------------------------
# 2D commands
# ---------------------------------------------------------------------------------------------


def _read_image_and_masks(image: Path, masks: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read a grey image and the union (> 0) of its binary masks; masks must match its size."""
    grey = read_grey(image)
    union = np.zeros(grey.shape, dtype=bool)
    for mask_path in masks:
        mask = read_mask_foreground(mask_path)
        if mask.shape != grey.shape:
            raise _error(mask_path, f"mask size {mask.shape} differs from image {image.name} size {grey.shape}")
        union |= mask
    return grey, union.astype(np.uint8)


def busi(
    source: str,
    output: str,
    exclude_normal: bool = False,
    seed: int = 0,
    labeled_ratio: float = 0.1,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str = "BUSI",
    overwrite: bool = False,
    log_every: int = 50,
) -> Path:
    """Convert ``Dataset_BUSI_with_GT/<class>/<class> (N).png`` (+ ``_mask*.png``) into the prepared format.

    Each image is its own case (``benign_001``); the lesion label is the union of all masks of an image.

    Args:
        source: the folder holding ``Dataset_BUSI_with_GT`` (or that folder itself).
        output: the output folder.
        exclude_normal: drop the ``normal`` class (its masks are empty).
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    root = src / "Dataset_BUSI_with_GT" if (src / "Dataset_BUSI_with_GT").is_dir() else src
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        cls = _safe_id(class_dir.name.lower())
        if exclude_normal and cls == "normal":
            continue
        for image in sorted(class_dir.glob("*.png")):
            if re.search(r"_mask(_\d+)?$", image.stem):
                continue
            match = re.fullmatch(r".*?\((\d+)\)", image.stem)
            if match is None:
                raise _error(image, "unexpected file name (expected '<class> (N).png')")
            masks = sorted(
                p
                for p in class_dir.glob("*_mask*.png")
                if re.fullmatch(re.escape(image.stem) + r"_mask(_\d+)?", p.stem)
            )
            if not masks:
                raise _error(image, f"image without its mask (expected {image.stem}_mask.png)")
            uid = f"{cls}_{int(match.group(1)):03d}"
            items.append(Item(uid, uid, image, functools.partial(_read_image_and_masks, image, masks), label=masks[0]))
    _require_items(items, root)
    _check_unique_uids(items)
    out = _prepare_output(output, [src], overwrite)
    assignment = split_cases(
        (it.case for it in items), labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "source": source,
        "output": output,
        "exclude_normal": exclude_normal,
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
    }
    meta = Meta(
        name,
        "Breast ultrasound lesions (Al-Dhabyani et al. 2020)",
        "US",
        2,
        {"0": "background", "1": "lesion"},
        None,
        False,
        {"format": "busi", "path": str(src), "tool": _tool_string("busi", options)},
    )
    split = _seeded_split_meta(seed, "image", labeled_ratio, val_ratio, test_ratio)
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=2, log_every=log_every)


def _check_unique_uids(items: list[Item]) -> None:
    """Raise when two source files map to the same output id."""
    seen: dict[str, Path] = {}
    for item in items:
        if item.uid in seen:
            raise _error(item.image, f"maps to the same id {item.uid!r} as {seen[item.uid]}")
        seen[item.uid] = item.image


def ddti(
    source: str,
    output: str,
    seed: int = 0,
    labeled_ratio: float = 0.1,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str = "DDTI",
    overwrite: bool = False,
    log_every: int = 50,
) -> Path:
    """Convert DDTI crops ``cropped/<case>_<img>(<nodule>).png`` with ``mask/<same>.gif`` (0/255).

    The split groups by the case number before the first underscore, so all images of a patient land
    in one list.

    Args:
        source: the folder holding ``cropped/`` and ``mask/``.
        output: the output folder.
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    images_dir = _check_dir(src / "cropped", "image (cropped/)")
    masks_dir = _check_dir(src / "mask", "mask")
    items = []
    for image in sorted(images_dir.glob("*.png")):
        mask = masks_dir / f"{image.stem}.gif"
        if not mask.exists() and (masks_dir / f"{image.stem}.png").exists():
            mask = masks_dir / f"{image.stem}.png"
        if not mask.exists():
            raise _error(image, f"image without its mask (expected {mask})")
        case = image.stem.split("_", 1)[0]
        case = str(int(case)) if case.isdigit() else case  # "007" and "7" are one patient
        uid = _safe_id(image.stem.replace("(", "_").replace(")", ""))
        items.append(Item(uid, case, image, functools.partial(_read_image_and_masks, image, [mask]), label=mask))
    _require_items(items, images_dir)
    _check_unique_uids(items)
    out = _prepare_output(output, [src], overwrite)
    assignment = split_cases(
        (it.case for it in items), labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "source": source,
        "output": output,
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
    }
    meta = Meta(
        name,
        "Thyroid ultrasound nodules, nodule-centred crops (Pedraza et al. 2015)",
        "US",
        2,
        {"0": "background", "1": "nodule"},
        None,
        False,
        {"format": "ddti", "path": str(src), "tool": _tool_string("ddti", options)},
    )
    split = _seeded_split_meta(seed, "patient", labeled_ratio, val_ratio, test_ratio)
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=2, log_every=log_every)


def _read_hc18(image: Path, annotation: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an HC18 image and its head annotation (R channel > 0, holes filled for outlines)."""
    from scipy.ndimage import binary_fill_holes

    grey = read_grey(image)
    ann = _open_image(annotation, "annotation")
    red = np.asarray(ann.convert("RGB"))[..., 0] if ann.mode not in ("1", "L") else np.asarray(ann)
    head = binary_fill_holes(red > 0)
    if head.shape != grey.shape:
        raise _error(annotation, f"annotation size {head.shape} differs from image {image.name} size {grey.shape}")
    return grey, head.astype(np.uint8)


def _read_hc18_pixel_sizes(csv_path: Path) -> dict[str, float]:
    """Read ``filename -> pixel size (mm)`` from the HC18 csv."""
    import csv

    _check_file(csv_path, "pixel size csv")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "filename" not in columns or "pixel size(mm)" not in columns:
            raise _error(csv_path, f"expected columns 'filename' and 'pixel size(mm)', got {reader.fieldnames}")
        sizes = {}
        for row in reader:
            try:
                sizes[row[columns["filename"]].strip()] = float(row[columns["pixel size(mm)"]])
            except (TypeError, ValueError) as exc:
                raise _error(csv_path, f"bad pixel size in row {row}") from exc
    return sizes


def hc18(
    source: str,
    output: str,
    seed: int = 0,
    labeled_ratio: float = 0.1,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str = "HC18",
    overwrite: bool = False,
    log_every: int = 50,
) -> Path:
    """Convert HC18 ``training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png`` with the pixel-size csv.

    Each item records its own ``"spacing": [ps, ps]`` (mm); the split groups by subject ``NNN``.

    Args:
        source: the folder holding ``training_set/`` and ``training_set_pixel_size_and_HC.csv``.
        output: the output folder.
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    images_dir = src / "training_set" if (src / "training_set").is_dir() else src
    csv_candidates = [d / "training_set_pixel_size_and_HC.csv" for d in (src, images_dir, images_dir.parent)]
    csv_path = next((p for p in csv_candidates if p.is_file()), csv_candidates[0])
    sizes = _read_hc18_pixel_sizes(csv_path)
    items = []
    for image in sorted(images_dir.glob("*.png")):
        if image.stem.endswith("_Annotation"):
            continue
        annotation = image.with_name(f"{image.stem}_Annotation.png")
        if not annotation.exists():
            raise _error(image, f"image without its annotation (expected {annotation.name})")
        match = re.match(r"(\d+)_", image.stem)
        if match is None:
            raise _error(image, "unexpected file name (expected NNN_HC.png)")
        if image.name not in sizes:
            raise _error(image, f"no pixel size for this file in {csv_path}")
        spacing = [sizes[image.name], sizes[image.name]]
        reader = functools.partial(_read_hc18, image, annotation)
        items.append(
            Item(_safe_id(image.stem), match.group(1), image, reader, label=annotation, extra={"spacing": spacing})
        )
    _require_items(items, images_dir)
    out = _prepare_output(output, [src], overwrite)
    assignment = split_cases(
        (it.case for it in items), labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "source": source,
        "output": output,
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
    }
    meta = Meta(
        name,
        "Fetal head ultrasound, HC18 challenge (van den Heuvel et al. 2018)",
        "US",
        2,
        {"0": "background", "1": "head"},
        None,
        True,
        {"format": "hc18", "path": str(src), "tool": _tool_string("hc18", options)},
    )
    split = _seeded_split_meta(seed, "subject", labeled_ratio, val_ratio, test_ratio)
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=2, log_every=log_every)


def _read_image_and_label(image: Path, label: Path | None, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a grey image and (optionally) its class-index label."""
    grey = read_grey(image)
    return grey, (read_label_indices(label, num_classes) if label is not None else None)


def _resolve_listed(folder: Path, entry: str, list_file: Path) -> Path:
    """Find the file a list line names (with or without a ``.png`` suffix)."""
    for candidate in (folder / entry, folder / f"{entry}.png"):
        if candidate.is_file():
            return candidate
    raise _error(list_file, f"lists {entry!r} but {folder / entry} does not exist")


def switch(
    source: str,
    output: str,
    labeled_ratio: float = 0.05,
    num_classes: int = 2,
    name: str | None = None,
    overwrite: bool = False,
    log_every: int = 50,
) -> Path:
    """Convert the Switch repository layout (``images/``, ``labels/``, ``train.txt``/``val.txt``/``test.txt``).

    The labelled list is the FIRST ``floor(labeled_ratio * N_train)`` names of ``train.txt`` (file
    order defines the split, as in the reference); the rest of ``train.txt`` is unlabelled. Masks
    stored as 0/255 become 0/1.

    Args:
        source: the dataset root.
        output: the output folder.
        labeled_ratio: labelled fraction of ``train.txt``.
        num_classes: number of classes (label values are checked against it).
        name: dataset name in the datalist (default: the folder name).
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    images_dir, labels_dir = _check_dir(src / "images", "images"), _check_dir(src / "labels", "labels")
    train_file = src / "train.txt"
    _check_file(train_file, "train.txt list")
    lists = {"train": _read_id_list(train_file)}
    for key in ("val", "test"):
        path = src / f"{key}.txt"
        lists[key] = _read_id_list(path) if path.is_file() else []
        if not path.is_file():
            LOG.warning("%s: absent; the %s list stays empty", path, "validation" if key == "val" else key)
    items: dict[str, Item] = {}
    ids: dict[str, list[str]] = {}
    for key, names in lists.items():
        ids[key] = []
        for entry in names:
            image = _resolve_listed(images_dir, entry, src / f"{key}.txt")
            label = labels_dir / image.name
            if not label.is_file():
                raise _error(image, f"image without its mask (expected {label})")
            uid = _safe_id(image.stem)
            reader = functools.partial(_read_image_and_label, image, label, num_classes)
            items.setdefault(uid, Item(uid, uid, image, reader, label=label))
            ids[key].append(uid)
    n_train = len(ids["train"])
    n_lab = math.floor(labeled_ratio * n_train)
    assignment = {
        "labeled": ids["train"][:n_lab],
        "unlabeled": ids["train"][n_lab:],
        "validation": ids["val"],
        "test": ids["test"],
    }
    if n_lab < 1:
        raise _error(train_file, f"floor({labeled_ratio} * {n_train}) = 0 labelled images; raise --labeled_ratio")
    _require_items(list(items.values()), src)
    out = _prepare_output(output, [src], overwrite)
    options = {"source": source, "output": output, "labeled_ratio": labeled_ratio, "num_classes": num_classes}
    meta = Meta(
        name or src.name,
        "Switch repository layout (images/, labels/, train/val/test.txt)",
        "US",
        2,
        _class_names(num_classes),
        None,
        False,
        {"format": "switch", "path": str(src), "tool": _tool_string("switch", options)},
    )
    split = {
        "method": "given lists; labelled = first floor(ratio * N) names of train.txt",
        "seed": None,
        "group_by": "image",
        "ratios": {"labeled": labeled_ratio, "validation": None, "test": None},
    }
    return _run(
        list(items.values()), assignment, out=out, meta=meta, split=split, num_classes=num_classes, log_every=log_every
    )


def _case_of(uid: str, case_pattern: str | None) -> str:
    """The case of an item: group 1 of ``case_pattern`` when it matches, else the id itself."""
    if case_pattern:
        match = re.search(case_pattern, uid)
        if match is None:
            raise DatasetPreparationError(f"{uid}: --case_pattern {case_pattern!r} does not match")
        return match.group(1) if match.groups() else match.group(0)
    return uid


def _index_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Map file stems (known suffixes removed) to files of a folder; duplicate stems are an error."""
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(tuple(suffixes)) or path.name.startswith("."):
            continue
        stem = _strip_suffix(path.name, suffixes)
        if stem in index:
            raise _error(path, f"two files share the stem {stem!r} (also {index[stem].name})")
        index[stem] = path
    return index


def _pair_folders(
    images_dir: Path, labels_dir: Path, suffixes: Sequence[str], unlabeled_without_label: bool
) -> list[tuple[str, Path, Path | None]]:
    """Match images to labels by stem: ``(stem, image, label_or_None)``."""
    images = _index_by_stem(images_dir, suffixes)
    labels = _index_by_stem(labels_dir, suffixes)
    pairs = []
    for stem, image in images.items():
        label = labels.get(stem)
        if label is None and not unlabeled_without_label:
            raise _error(
                image, "image without its label (pass --unlabeled_without_label True to keep it as unlabelled)"
            )
        pairs.append((stem, image, label))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise _error(labels[orphans[0]], "label without an image")
    return pairs


def _split_with_unlabeled_only(
    items: list[Item], *, labeled_ratio: float, val_ratio: float, test_ratio: float, seed: int
) -> dict[str, list[str]]:
    """Seeded split of the cases with labels; cases without any label are appended to unlabelled."""
    labelled_cases = {it.case for it in items if it.has_label}
    unlabeled_only = {it.case for it in items} - labelled_cases
    mixed = {it.case for it in items if not it.has_label} & labelled_cases
    if mixed:
        raise DatasetPreparationError(f"cases mix labelled and unlabelled images: {sorted(mixed)[:5]}")
    if not labelled_cases:
        raise DatasetPreparationError("no labelled images found (empty result)")
    assignment = split_cases(
        labelled_cases, labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    assignment["unlabeled"] = sorted(set(assignment["unlabeled"]) | unlabeled_only)
    return assignment


def folder(
    images: str,
    labels: str,
    output: str,
    num_classes: int = 2,
    unlabeled_without_label: bool = False,
    case_pattern: str | None = None,
    modality: str = "US",
    seed: int = 0,
    labeled_ratio: float = 0.1,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str | None = None,
    overwrite: bool = False,
    log_every: int = 50,
) -> Path:
    """Convert a plain 2D image folder + label folder pair, matched by file stem.

    Labels with values ``{0, 255}`` become ``{0, 1}``; small integers are kept and checked against
    ``num_classes``.

    Args:
        images: the image folder.
        labels: the label folder.
        output: the output folder.
        num_classes: number of classes including background.
        unlabeled_without_label: keep images without a label as unlabelled (else an error).
        case_pattern: regular expression on the file stem whose group 1 is the case (default: each
            image is its own case).
        modality: ``US``, ``MR``, ``CT``...
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist (default: the image folder's parent name).
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    images_dir, labels_dir = _check_dir(images, "images"), _check_dir(labels, "labels")
    items = []
    for stem, image, label in _pair_folders(images_dir, labels_dir, IMAGE_2D_SUFFIXES, unlabeled_without_label):
        uid = _safe_id(stem)
        reader = functools.partial(_read_image_and_label, image, label, num_classes)
        items.append(Item(uid, _case_of(uid, case_pattern), image, reader, label=label, has_label=label is not None))
    _require_items(items, images_dir)
    _check_unique_uids(items)
    out = _prepare_output(output, [images_dir, labels_dir], overwrite)
    assignment = _split_with_unlabeled_only(
        items, labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "images": images,
        "labels": labels,
        "output": output,
        "num_classes": num_classes,
        "unlabeled_without_label": unlabeled_without_label,
        "case_pattern": case_pattern,
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
    }
    meta = Meta(
        name or images_dir.parent.name,
        f"2D images from {images_dir}",
        modality,
        2,
        _class_names(num_classes),
        None,
        False,
        {"format": "folder", "path": str(images_dir), "tool": _tool_string("folder", options)},
    )
    split = _seeded_split_meta(seed, "case" if case_pattern else "image", labeled_ratio, val_ratio, test_ratio)
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=num_classes, log_every=log_every)


# ---------------------------------------------------------------------------------------------
# 3D commands
# ---------------------------------------------------------------------------------------------


def _read_h5(path: Path, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Read datasets of an HDF5 file; a missing required key or an unreadable file is a clear error."""
    import h5py

    _check_file(path, "HDF5")
    try:
        with h5py.File(path, "r") as handle:
            missing = [k for k in keys if k not in handle]
            if missing:
                raise _error(path, f"missing key(s) {missing} (has {sorted(handle.keys())})")
            return {k: np.asarray(handle[k][()]) for k in (*keys, *optional) if k in handle}
    except DatasetPreparationError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise _error(path, f"cannot read HDF5 file ({type(exc).__name__}: {exc})") from exc


def _read_la(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Read a UA-MT ``mri_norm2.h5`` volume (X, Y, Z) with 0.625 mm isotropic spacing."""
    data = _read_h5(path, ["image"], ["label"])
    image, label = data["image"].astype(np.float32), data.get("label")
    if label is not None and label.shape != image.shape:
        raise _error(path, f"label shape {label.shape} differs from image shape {image.shape}")
    return image, label, np.diag([*LA_SPACING, 1.0])


def _find_list(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first existing list file among ``names`` in ``folders``."""
    for name in names:
        for directory in folders:
            if (directory / name).is_file():
                return directory / name
    return None


def downsample_volume(
    image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, factor: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Shrink a volume by an integer ``factor`` per axis (size ``round(n / factor)``, at least 1).

    The image is area-averaged (anti-aliased); the label is area-averaged per class and each voxel takes the class
    with the largest share (so thin structures are not lost to point sampling). The affine keeps the volume's
    physical extent: each axis's voxel size grows by ``n_in / n_out`` and the origin moves to the new first voxel's
    centre.

    Returns:
        ``(image, label, affine)`` at the new size (``label`` ``None`` when it was).
    """
    import torch
    import torch.nn.functional as F
    from monai.transforms.utils import scale_affine

    if factor == 1:
        return image, label, affine
    size = [max(1, round(n / factor)) for n in image.shape]
    img = F.interpolate(torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None], size=size, mode="area")
    small_label = None
    if label is not None:
        onehot = F.one_hot(torch.as_tensor(np.asarray(label, dtype=np.int64)), num_classes).movedim(-1, 0).float()
        small_label = F.interpolate(onehot[None], size=size, mode="area")[0].argmax(0).numpy().astype(np.uint8)
    # new index -> old index: scale by n_in / n_out about the first corner, so new voxel j's centre sits at old
    # index (j + 0.5) * s - 0.5 (the area average's block centre)
    index_map = scale_affine(image.shape, size, centered=True)
    return img[0, 0].numpy(), small_label, np.asarray(affine, dtype=np.float64) @ index_map


def _downsampling(item: Item, factor: int, num_classes: int) -> Callable[[], tuple]:
    """Wrap an item's reader so that it returns the volume shrunk by ``factor`` (see :func:`downsample_volume`)."""
    read = item.read

    def read_small() -> tuple:
        return downsample_volume(*read(), factor=factor, num_classes=num_classes)

    return read_small


def la(
    source: str,
    output: str,
    num_labeled: int = 8,
    test_from: str = "none",
    val_from: str = "none",
    lists_dir: str | None = None,
    seed: int = 0,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str = "LA",
    downsample: int = 1,
    overwrite: bool = False,
    log_every: int = 10,
) -> Path:
    """Convert the UA-MT left-atrium layout ``<root>/<CASE>/mri_norm2.h5`` with its list files.

    Lists: ``train.list`` (+ ``train_{L}_label.list``) and ``test.list``, or ``labeled.list``,
    ``unlabeled.list`` and ``val.list``. The labelled cases are the first ``num_labeled`` ids of the
    labelled (or training) list; unlabelled = the training list minus them (a complement, unlike the
    reference's 16-label lists). Missing validation/test lists: see ``test_from``/``val_from``.

    Args:
        source: the folder holding the case folders (or ``2018LA_Seg_Training Set``) and the lists.
        output: the output folder.
        num_labeled: number of labelled cases (4, 8, 16...).
        test_from: ``none``, ``val`` or ``split``: what the test list is when ``test.list`` is absent.
        val_from: ``none``, ``test`` or ``split``: what validation is when ``val.list`` is absent.
        lists_dir: folder of the list files (default: ``source`` and its parent).
        seed: seed of a ``split`` of the evaluation cases.
        val_ratio: validation share of a ``split``.
        test_ratio: test share of a ``split``.
        name: dataset name in the datalist.
        downsample: shrink every volume by this integer factor per axis (1: as stored, 0.625 mm). The CPU quality
            protocol uses 2 (1.25 mm), so that its small training crops still hold much of the atrium; each
            item records its own spacing, since ``round(n / factor)`` changes the voxel size slightly per volume.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many volumes.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise DatasetPreparationError(f"--downsample must be a whole factor of at least 1, got {downsample!r}")
    folders = [_check_dir(lists_dir, "lists")] if lists_dir else [src, src.parent]
    case_root = src / "2018LA_Seg_Training Set" if (src / "2018LA_Seg_Training Set").is_dir() else src
    train_file = _find_list(folders, ["train.list"])
    if train_file is not None:
        train = _read_id_list(train_file)
        label_file = _find_list(folders, [f"train_{num_labeled}_label.list"]) or train_file
        labelled_source = _read_id_list(label_file)
    else:
        label_file = _find_list(folders, ["labeled.list"])
        if label_file is None:
            raise _error(src, "no train.list or labeled.list found")
        labelled_source = _read_id_list(label_file)
        unlabeled_file = _find_list(folders, ["unlabeled.list"])
        train = _unique(labelled_source + (_read_id_list(unlabeled_file) if unlabeled_file else []))
    if num_labeled < 1 or num_labeled > len(labelled_source):
        raise _error(label_file, f"--num_labeled {num_labeled} but the list holds {len(labelled_source)} ids")
    labelled = labelled_source[:num_labeled]
    train = _unique(train + [c for c in labelled if c not in train])
    unlabelled = [c for c in train if c not in set(labelled)]
    val_file, test_file = _find_list(folders, ["val.list"]), _find_list(folders, ["test.list"])
    val, test, notes = _split_eval(
        _read_id_list(val_file) if val_file else None,
        _read_id_list(test_file) if test_file else None,
        test_from=test_from,
        val_from=val_from,
        val_ratio=val_ratio,
        test_ratio=test_ratio,
        seed=seed,
        what=str(src),
    )
    assignment = {"labeled": labelled, "unlabeled": unlabelled, "validation": val, "test": test}
    items = []
    for case in _unique(c for ids in assignment.values() for c in ids):
        path = case_root / case / "mri_norm2.h5"
        if not path.is_file():
            raise _error(path, f"case {case} is listed but its volume is missing")
        items.append(Item(_safe_id(case), case, path, functools.partial(_read_la, path), label=path))
    _require_items(items, case_root)
    if downsample > 1:
        for item in items:
            item.read = _downsampling(item, downsample, num_classes=2)
            item.read = _recording_spacing(item)
    out = _prepare_output(output, [src], overwrite)
    options = {
        "source": source,
        "output": output,
        "num_labeled": num_labeled,
        "test_from": test_from,
        "val_from": val_from,
        "lists_dir": lists_dir,
        **({"downsample": downsample} if downsample > 1 else {}),
    }
    meta = Meta(
        name,
        "Left atrium LGE-MRI, 2018 Atrial Segmentation Challenge (UA-MT preprocessing)"
        + (f", downsampled {downsample}x" if downsample > 1 else ""),
        "MR",
        3,
        {"0": "background", "1": "left atrium"},
        list(LA_SPACING) if downsample == 1 else None,  # per item when downsampled
        True,
        {"format": "la", "path": str(src), "tool": _tool_string("la", options)},
    )
    split = {
        "method": f"given lists; labelled = first {num_labeled} of {label_file.name}; unlabelled = training list minus labelled",
        "seed": seed,
        "group_by": "patient",
        "ratios": _eval_ratios("split" in notes.values(), val_ratio, test_ratio),
        **notes,
    }
    path = _run(items, assignment, out=out, meta=meta, split=split, num_classes=2, log_every=log_every)
    return _set_global_spacing(path) if downsample > 1 else path


def _acdc_patient(text: str) -> str:
    """Normalise ``38``, ``'038'`` or ``'patient038'`` to ``'patient038'``."""
    match = re.search(r"(\d+)", str(text))
    if match is None:
        raise DatasetPreparationError(f"cannot read an ACDC patient number from {text!r}")
    return f"patient{int(match.group(1)):03d}"


def _acdc_patients_in(path: Path) -> list[str]:
    """Patients named in an SSL4MIS list file (slice or volume names), in first-seen order."""
    return _unique(f"patient{m}" for m in re.findall(r"patient(\d{3})", path.read_text()))


def _acdc_labelled(labeled_patients: Any, label_lists: list[Path]) -> list[str]:
    """Resolve ``--labeled_patients``: a preset count (1/3/7), ``list`` (from the files) or explicit ids."""
    if isinstance(labeled_patients, bool):
        raise DatasetPreparationError(f"--labeled_patients {labeled_patients!r} is not valid")
    if isinstance(labeled_patients, int):
        if labeled_patients not in ACDC_PRESETS:
            raise DatasetPreparationError(
                f"--labeled_patients {labeled_patients}: presets are {sorted(ACDC_PRESETS)}; or give ids"
            )
        return [f"patient{p}" for p in ACDC_PRESETS[labeled_patients]]
    if isinstance(labeled_patients, str) and labeled_patients.strip().lower() == "list":
        if not label_lists:
            raise DatasetPreparationError("--labeled_patients list: no labeled_slices.txt/labeled.txt found")
        return _unique(p for path in label_lists for p in _acdc_patients_in(path))
    if isinstance(labeled_patients, str):
        labeled_patients = [t for t in re.split(r"[,\s]+", labeled_patients.strip("[]() ")) if t]
    return _unique(_acdc_patient(p) for p in labeled_patients)


def _read_acdc_volume(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Read an SSL4MIS ACDC volume (Z, H, W) as (H, W, Z) with a unit-spacing affine."""
    data = _read_h5(path, ["image"], ["label"])
    image, label = data["image"], data.get("label")
    if image.ndim != 3:
        raise _error(path, f"expected a (Z, H, W) volume, got shape {image.shape}")
    if label is not None and label.shape != image.shape:
        raise _error(path, f"label shape {label.shape} differs from image shape {image.shape}")
    to_hwz = (1, 2, 0)
    return (
        image.transpose(to_hwz).astype(np.float32),
        None if label is None else label.transpose(to_hwz),
        np.eye(4),
    )


def _read_acdc_slices(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Stack SSL4MIS ACDC slices (H, W), in slice order, into an (H, W, Z) volume."""
    images, labels = [], []
    for path in paths:
        data = _read_h5(path, ["image"], ["label"])
        if data["image"].ndim != 2 or (images and data["image"].shape != images[0].shape):
            raise _error(path, f"slice shape {data['image'].shape} differs from the frame's other slices or is not 2D")
        if "label" in data and data["label"].shape != data["image"].shape:
            raise _error(path, f"label shape {data['label'].shape} differs from image shape {data['image'].shape}")
        images.append(data["image"])
        labels.append(data.get("label"))
    label = None if any(lab is None for lab in labels) else np.stack(labels, axis=-1)
    return np.stack(images, axis=-1).astype(np.float32), label, np.eye(4)


def _acdc_frames(data_dir: Path) -> list[Item]:
    """One item per patient frame: its volume file, or else its stacked slice files."""
    volumes = {p.stem: p for p in data_dir.glob("patient*_frame*.h5") if re.fullmatch(r"patient\d+_frame\d+", p.stem)}
    slices: dict[str, dict[int, Path]] = {}
    for path in (data_dir / "slices").glob("patient*_frame*_slice_*.h5"):
        match = re.fullmatch(r"(patient\d+_frame\d+)_slice_(\d+)", path.stem)
        if match:
            slices.setdefault(match.group(1), {})[int(match.group(2))] = path
    items = []
    for frame in sorted(set(volumes) | set(slices)):
        case = _acdc_patient(frame.split("_")[0])
        uid = f"{case}_{frame.split('_')[1]}"
        if frame in volumes:
            items.append(
                Item(
                    uid,
                    case,
                    volumes[frame],
                    functools.partial(_read_acdc_volume, volumes[frame]),
                    label=volumes[frame],
                )
            )
            continue
        numbers = sorted(slices[frame])
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
            raise _error(
                data_dir / "slices" / f"{frame}_slice_{missing[0]}.h5",
                f"slice missing in frame {frame} (found {numbers})",
            )
        paths = [slices[frame][k] for k in numbers]
        items.append(Item(uid, case, paths[0], functools.partial(_read_acdc_slices, paths), label=paths[0]))
    return items


def acdc(
    source: str,
    output: str,
    labeled_patients: Any = 3,
    test_from: str = "none",
    val_from: str = "none",
    lists_dir: str | None = None,
    seed: int = 0,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str = "ACDC",
    overwrite: bool = False,
    log_every: int = 10,
) -> Path:
    """Convert the SSL4MIS ACDC layout (``data/patientNNN_frameMM.h5`` and ``data/slices/...``).

    One NIfTI volume per patient frame (axes H, W, Z; a frame stored only as slices is stacked in
    slice order). Spacing is not stored in these files: unit spacing, ``spacing_known: false``.
    Labelled patients come from ``labeled_patients``; unlabelled = the other training patients
    (those of the training list files, else every patient outside validation/test). Validation and
    test come from ``val_volumes.txt``/``val.txt``/``val.list`` and ``test.txt``/``test.list``;
    when no evaluation list exists at all, they are a seeded split by patient.

    Args:
        source: the folder holding ``data/`` and the list files.
        output: the output folder.
        labeled_patients: 1, 3 or 7 (the usual splits), ``list`` (the patients of
            ``labeled_slices.txt``/``labeled.txt``) or explicit patient ids (``038,050``).
        test_from: ``none``, ``val`` or ``split``: the test list when only a validation list exists.
        val_from: ``none``, ``test`` or ``split``: validation when only a test list exists.
        lists_dir: folder of the list files (default: ``source``).
        seed: seed of a seeded split.
        val_ratio: validation fraction of the patients (seeded split) or share (``split``).
        test_ratio: test fraction of the patients (seeded split) or share (``split``).
        name: dataset name in the datalist.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many volumes.

    Returns:
        The path of ``datalist.json``.
    """
    src = _check_dir(source, "source")
    folders = [_check_dir(lists_dir, "lists")] if lists_dir else [src]
    data_dir = src / "data" if (src / "data").is_dir() else src
    items = _acdc_frames(data_dir)
    _require_items(items, data_dir)
    patients = sorted({it.case for it in items})
    train_names = [
        "train_slices.list",
        "train_slices.txt",
        "train.list",
        "train.txt",
        "labeled_slices.txt",
        "unlabeled_slices.txt",
        "labeled.txt",
        "unlabeled.txt",
    ]
    train_lists = [d / n for n in train_names for d in folders if (d / n).is_file()]
    label_lists = [p for p in train_lists if p.name.startswith("labeled")]
    labelled = _acdc_labelled(labeled_patients, label_lists)
    absent = [p for p in labelled if p not in patients]
    if absent:
        raise _error(data_dir, f"labelled patient(s) {absent} not found")
    val_file = _find_list(folders, ["val_volumes.txt", "val.txt", "val.list"])
    test_file = _find_list(folders, ["test_volumes.txt", "test.txt", "test.list"])
    notes: dict[str, Any] = {}
    if val_file is None and test_file is None:
        assignment = split_cases(
            patients, labeled_ratio=0, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed, labeled=labelled
        )
        method = "seeded split of patients (no validation/test lists found)"
        ratios_used = True
    else:
        val, test, notes = _split_eval(
            _acdc_patients_in(val_file) if val_file else None,
            _acdc_patients_in(test_file) if test_file else None,
            test_from=test_from,
            val_from=val_from,
            val_ratio=val_ratio,
            test_ratio=test_ratio,
            seed=seed,
            what=str(src),
        )
        if train_lists:
            train = _unique(p for path in train_lists for p in _acdc_patients_in(path))
        else:
            train = [p for p in patients if p not in set(val) | set(test)]
        clash = sorted(set(labelled) & (set(val) | set(test)))
        if clash:
            raise _error(val_file or test_file, f"labelled patient(s) {clash} are evaluation patients")
        unlabelled = [p for p in train if p not in set(labelled)]
        assignment = {
            "labeled": labelled,
            "unlabeled": sorted(unlabelled),
            "validation": sorted(val),
            "test": sorted(test),
        }
        method = "given lists: " + ", ".join(p.name for p in [*train_lists, val_file, test_file] if p is not None)
        ratios_used = "split" in notes.values()
    missing = sorted({c for ids in assignment.values() for c in ids} - set(patients))
    if missing:
        raise _error(data_dir, f"listed patient(s) {missing[:10]} have no volume or slices")
    out = _prepare_output(output, [src], overwrite)
    options = {
        "source": source,
        "output": output,
        "labeled_patients": labeled_patients,
        "test_from": test_from,
        "val_from": val_from,
        "lists_dir": lists_dir,
        "seed": seed,
    }
    meta = Meta(
        name,
        "Cardiac cine-MRI, ACDC challenge (SSL4MIS preprocessing; spacing not stored)",
        "MR",
        3,
        dict(ACDC_LABELS),
        None,
        False,
        {"format": "acdc", "path": str(src), "tool": _tool_string("acdc", options)},
    )
    split = {
        "method": method,
        "seed": seed,
        "group_by": "patient",
        "ratios": _eval_ratios(ratios_used, val_ratio, test_ratio),
        "labeled_patients": labelled,
        **notes,
    }
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=4, log_every=log_every)


def _load_volume(path: Path, what: str, channel: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI/NRRD/MHA volume with MONAI's ``LoadImage``: ``(array X,Y,Z, affine)``."""
    from monai.transforms import LoadImage

    _check_file(path, what)
    try:
        volume = LoadImage(image_only=True)(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a clear message naming the file
        raise _error(
            path, f"cannot read {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    array, affine = np.asarray(volume), np.asarray(volume.affine, dtype=np.float64)
    if array.ndim == 4:
        if channel is None:
            raise _error(path, f"{what} has {array.shape[-1]} channels; choose one with --channel")
        array = array[..., channel]
    if array.ndim != 3:
        raise _error(path, f"expected a 3D {what}, got shape {array.shape}")
    return array, affine


def _read_nifti_pair(
    image: Path, label: Path | None, channel: int | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Read an image volume and (optionally) its label; their sizes and affines must agree."""
    array, affine = _load_volume(image, "image", channel)
    if label is None:
        return array.astype(np.float32), None, affine
    seg, seg_affine = _load_volume(label, "label", None)
    if seg.shape != array.shape:
        raise _error(label, f"label size {seg.shape} differs from image {image.name} size {array.shape}")
    if not np.allclose(seg_affine, affine, atol=1e-3):
        raise _error(label, f"label affine differs from image {image.name} affine")
    if not np.all(seg == np.round(seg)):
        raise _error(label, "label values are not integers")
    return array.astype(np.float32), seg.astype(np.int64), affine


def _msd_items(msd: Path, channel: int | None, use_test: bool) -> tuple[list[Item], dict[str, Any]]:
    """Items of an MSD ``dataset.json`` (training: labelled; test: unlabelled) and the json itself."""
    _check_file(msd, "dataset.json")
    try:
        spec = json.loads(msd.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _error(msd, f"not valid JSON ({exc})") from exc
    if not isinstance(spec.get("training"), list):
        raise _error(msd, "no 'training' list")
    base = msd.parent
    items = []
    for entry in spec["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise _error(msd, f"training entry {entry!r} lacks image/label")
        image, label = (base / entry["image"]).resolve(), (base / entry["label"]).resolve()
        uid = _safe_id(_strip_suffix(image.name, IMAGE_3D_SUFFIXES))
        items.append(Item(uid, uid, image, functools.partial(_read_nifti_pair, image, label, channel), label=label))
    for entry in spec.get("test", []) if use_test else []:
        image = (base / (entry["image"] if isinstance(entry, dict) else entry)).resolve()
        uid = _safe_id(_strip_suffix(image.name, IMAGE_3D_SUFFIXES))
        items.append(Item(uid, uid, image, functools.partial(_read_nifti_pair, image, None, channel), has_label=False))
    return items, spec


def _modality_code(value: Any) -> str:
    """Map MSD modality names to short codes (MRI/T2/ADC -> MR, CT -> CT)."""
    text = " ".join(value.values()) if isinstance(value, dict) else str(value)
    upper = text.upper()
    if "CT" in upper.split():
        return "CT"
    if any(token in upper for token in ("MR", "T1", "T2", "FLAIR", "ADC")):
        return "MR"
    return text or "MR"


def nifti(
    output: str,
    images: str | None = None,
    labels: str | None = None,
    msd: str | None = None,
    num_classes: int | None = None,
    modality: str | None = None,
    channel: int | None = None,
    unlabeled_without_label: bool = False,
    msd_test_unlabeled: bool = True,
    case_pattern: str | None = None,
    seed: int = 0,
    labeled_ratio: float = 0.1,
    val_ratio: float = 0.1,
    test_ratio: float = 0.2,
    name: str | None = None,
    overwrite: bool = False,
    log_every: int = 10,
) -> Path:
    """Convert 3D NIfTI/NRRD/MHA folders (``--images``/``--labels``) or an MSD ``dataset.json`` (``--msd``).

    Volumes are read with MONAI's ``LoadImage`` (ITK or nibabel), keeping the header's geometry: the
    output affine is the one read, each item records its own ``spacing``.

    Args:
        output: the output folder.
        images: the image folder (with ``labels``).
        labels: the label folder, files matched to images by name.
        msd: path of an MSD ``dataset.json`` (instead of ``images``/``labels``).
        num_classes: number of classes (default: the MSD ``labels`` count, else 2).
        modality: ``MR``, ``CT``... (default: from the MSD json, else ``MR``).
        channel: channel to keep from 4D (multi-modal) images.
        unlabeled_without_label: keep images without a label as unlabelled (folders).
        msd_test_unlabeled: add the MSD ``test`` images to the unlabelled list.
        case_pattern: regular expression on the file stem whose group 1 is the case.
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: allow a non-empty output folder.
        log_every: log progress every this many volumes.

    Returns:
        The path of ``datalist.json``.
    """
    spec: dict[str, Any] = {}
    if msd is not None:
        msd_path = Path(msd).expanduser().resolve()
        items, spec = _msd_items(msd_path, channel, msd_test_unlabeled)
        sources, src_path, fmt = [msd_path.parent], msd_path, "msd"
    else:
        images_dir, labels_dir = _check_dir(images, "images"), _check_dir(labels, "labels")
        items = []
        for stem, image, label in _pair_folders(images_dir, labels_dir, IMAGE_3D_SUFFIXES, unlabeled_without_label):
            uid = _safe_id(stem)
            reader = functools.partial(_read_nifti_pair, image, label, channel)
            items.append(Item(uid, uid, image, reader, label=label, has_label=label is not None))
        sources, src_path, fmt = [images_dir, labels_dir], images_dir, "nifti"
    for item in items:
        item.case = _case_of(item.uid, case_pattern)
    _require_items(items, src_path)
    _check_unique_uids(items)
    if num_classes is None:
        num_classes = len(spec["labels"]) if isinstance(spec.get("labels"), dict) else 2
    label_names = (
        {str(k): str(v) for k, v in spec["labels"].items()}
        if isinstance(spec.get("labels"), dict)
        else _class_names(num_classes)
    )
    out = _prepare_output(output, sources, overwrite)
    assignment = _split_with_unlabeled_only(
        items, labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    for item in items:
        item.read = _recording_spacing(item)
    options = {
        "images": images,
        "labels": labels,
        "msd": msd,
        "output": output,
        "num_classes": num_classes,
        "channel": channel,
        "case_pattern": case_pattern,
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_ratio": val_ratio,
        "test_ratio": test_ratio,
    }
    meta = Meta(
        name or spec.get("name") or src_path.parent.name,
        spec.get("description") or f"3D volumes from {src_path}",
        modality or _modality_code(spec.get("modality", "MR")),
        3,
        label_names,
        None,
        True,
        {"format": fmt, "path": str(src_path), "tool": _tool_string("nifti", options)},
    )
    split = _seeded_split_meta(seed, "case" if case_pattern else "image", labeled_ratio, val_ratio, test_ratio)
    path = _run(items, assignment, out=out, meta=meta, split=split, num_classes=num_classes, log_every=log_every)
    return _set_global_spacing(path)


def _recording_spacing(item: Item) -> Callable[[], tuple]:
    """Wrap an item's reader so that it stores the affine's voxel size as the item's ``spacing``."""
    read = item.read

    def read_and_record() -> tuple:
        image, label, affine = read()
        item.extra["spacing"] = [round(float(s), 6) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]
        return image, label, affine

    return read_and_record


def _set_global_spacing(path: Path) -> Path:
    """Record a global ``spacing`` in the datalist when every item has the same one."""
    datalist = json.loads(path.read_text())
    spacings = {tuple(e["spacing"]) for key in LIST_KEYS for e in datalist[key] if "spacing" in e}
    if len(spacings) == 1:
        datalist["spacing"] = list(spacings.pop())
        path.write_text(json.dumps(datalist, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[..., Path]] = {
    "busi": busi,
    "ddti": ddti,
    "hc18": hc18,
    "switch": switch,
    "folder": folder,
    "la": la,
    "acdc": acdc,
    "nifti": nifti,
}


def main() -> None:
    """Command line entry point (``python scripts/prepare_data.py <command> ...``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        fire_cli(COMMANDS, DatasetPreparationError, serialize=lambda _: None)
    except DatasetPreparationError as exc:
        LOG.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
