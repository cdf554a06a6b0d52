# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""What every converter of ``prepare_data.py`` shares: the error, items, readers, splits and writers.

A converter (:mod:`dataprep.us2d`, :mod:`dataprep.volumes`) builds a list of :class:`Item` (one image or
volume each, read lazily), a split of their cases and a :class:`Meta`, and hands them to :func:`_run`, which
checks the split and writes the images, labels and ``datalist.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LOG = logging.getLogger("prepare_data")

LIST_KEYS = ("labeled", "unlabeled", "validation", "test")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # an output id: one path component, not hidden
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
        probe: a cheap check of the source files (existence, header, keys, sizes) run before anything is
            written; it raises :class:`DatasetPreparationError` on a bad file and returns whether the item
            has a label (``None``: no check).
    """

    uid: str
    case: str
    image: Path
    read: Callable[[], tuple]
    label: Path | None = None
    has_label: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    probe: Callable[[], bool] | None = None


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


def _read_text(path: Path, what: str) -> str:
    """The text of a list or table file; an unreadable or binary file is a clear error."""
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise _error(path, f"{what} is not a text file ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise _error(path, f"cannot read {what} ({exc.strerror or exc})") from exc


def _read_id_list(path: Path) -> list[str]:
    """Read a list file: one entry a line, blank lines and ``#`` comments skipped, order kept."""
    lines = [line.strip() for line in _read_text(path, "list file").splitlines()]
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
    if not _SAFE_NAME.fullmatch(safe):
        raise DatasetPreparationError(f"cannot derive an output file name from {text!r}; rename the source file")
    return safe


def _inside(folder: Path, entry: str, listed_in: Path) -> Path:
    """``folder / entry`` when it names a path inside ``folder`` (symbolic links in it may point anywhere)."""
    path = folder / entry
    if folder not in Path(os.path.normpath(path)).parents:
        raise _error(listed_in, f"lists {entry!r}, which is not inside {folder}; list names relative to that folder")
    return path


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


def _image_shape(path: Path, what: str) -> tuple[int, int]:
    """``(height, width)`` from an image file's header (cheap: nothing is decoded)."""
    _check_file(path, what)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except _READ_ERRORS as exc:
        raise _error(path, f"cannot read {what} ({type(exc).__name__}: {exc})") from exc
    return height, width


def probe_2d(image: Path, labels: Sequence[Path] = (), what: str = "label") -> bool:
    """Check an image and its label files before anything is written: readable headers, one size.

    Returns:
        Whether the image has a label (``labels`` is not empty).

    Raises:
        DatasetPreparationError: a missing, empty or unreadable file, or a label of another size.
    """
    shape = _image_shape(image, "image")
    for label in labels:
        label_shape = _image_shape(label, what)
        if label_shape != shape:
            raise _error(label, f"{what} size {label_shape} differs from image {image.name} size {shape}")
    return bool(labels)


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


@dataclass(frozen=True)
class OutputFolder:
    """Where a run writes: the output folder, and whether an earlier prepared dataset there may be replaced."""

    path: Path
    replace: bool


_WRITTEN_NAMES = {"datalist.json", "images", "labels"}


def _prepared_dataset_problem(out: Path) -> str | None:
    """Why the non-empty folder ``out`` is not a dataset this tool wrote (so it must not be replaced), or None."""
    datalist = out / "datalist.json"
    if not datalist.is_file():
        return "holds no datalist.json, so it is not a prepared dataset"
    try:
        content = json.loads(datalist.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        content = None
    if not isinstance(content, dict) or not all(key in content for key in LIST_KEYS):
        return "holds a datalist.json that prepare_data.py did not write"
    others = sorted(p.name for p in out.iterdir() if p.name not in _WRITTEN_NAMES)
    if others:
        return f"holds files prepare_data.py did not write ({', '.join(others[:5])})"
    return None


def _prepare_output(output: str | Path | None, sources: Sequence[Path], overwrite: bool) -> OutputFolder:
    """Check the output folder; refuse a non-empty one (unless ``overwrite``) or one overlapping a source.

    With ``overwrite``, a non-empty folder must hold a prepared dataset and nothing else (``datalist.json``,
    ``images/``, ``labels/``): it is replaced as a whole once the new dataset is complete. Any other
    non-empty folder is refused, never deleted.
    """
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
            raise _error(
                out, "output folder is not empty (pass --overwrite True to replace the dataset prepared in it)"
            )
        problem = _prepared_dataset_problem(out)
        if problem is not None:
            raise _error(out, f"output folder {problem}; it is not replaced: empty it yourself or choose another one")
        LOG.warning("%s: the prepared dataset there is replaced once the new one is complete", out)
    return OutputFolder(out, overwrite)


def _write_all_or_nothing(write: Callable[[Path], Path], output: OutputFolder) -> Path:
    """Run ``write`` into a temporary sibling of the output folder, then put the complete result in its place.

    ``write(folder)`` writes the whole dataset into ``folder`` and returns the path of its ``datalist.json``.
    The output folder changes only when everything was written: a failed run (any error, or Ctrl-C) removes
    the temporary folder and leaves the output exactly as it was. With ``output.replace``, an earlier prepared
    dataset is swapped out as a whole (never mixed with the new one) and then deleted.

    Returns:
        The path of ``datalist.json`` in the output folder.
    """
    out = output.path
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    old = out.with_name(f"{out.name}.replaced-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "images").mkdir(parents=True)
        (tmp / "labels").mkdir()
        datalist = write(tmp)
        if out.is_dir() and any(out.iterdir()):
            problem = "was filled during the run" if not output.replace else _prepared_dataset_problem(out)
            if problem is not None:
                raise _error(out, f"output folder {problem}; it is not replaced")
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)  # replaces an empty folder
    except OSError as exc:
        where = exc.filename or tmp
        raise _error(where, f"{exc.strerror or exc}; the output folder {out} is unchanged") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / datalist.relative_to(tmp)


def _probe(items: list[Item], assignment: dict[str, list[str]]) -> None:
    """Run the cheap source checks of every listed item before anything is written; record which have a label."""
    listed = {case for cases in assignment.values() for case in cases}
    for item in items:
        if item.case in listed and item.probe is not None:
            item.has_label = bool(item.probe())


def _assign(items: list[Item], assignment: dict[str, list[str]]) -> dict[str, list[Item]]:
    """Distribute items to the lists by case; items of unlisted cases are left out (logged)."""
    by_list: dict[str, list[Item]] = {key: [] for key in LIST_KEYS}
    seen: set[str] = set()
    for key in LIST_KEYS:
        cases = set(assignment.get(key, []))
        for item in items:
            if item.case in cases:
                if key != "unlabeled" and not item.has_label:
                    raise _error(
                        item.image,
                        f"has no label but case {item.case} is in the {key} list: add its label, or list the case "
                        "as unlabelled only",
                    )
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
    global_spacing: bool = False,
) -> Path:
    """Build, validate and write ``datalist.json``; return its path.

    With ``global_spacing``, the datalist's ``spacing`` is the items' one when they all have the same.
    """
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
                if "label" not in written[item.uid]:
                    raise _error(item.image, f"no label was read but case {item.case} is in the {key} list")
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
    if global_spacing:
        spacings = {tuple(e["spacing"]) for key in LIST_KEYS for e in lists[key] if "spacing" in e}
        if len(spacings) == 1:
            datalist["spacing"] = list(spacings.pop())
    path = out / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2) + "\n")
    return path


def _run(
    items: list[Item],
    assignment: dict[str, list[str]],
    *,
    out: OutputFolder,
    meta: Meta,
    split: dict[str, Any],
    num_classes: int,
    log_every: int,
    global_spacing: bool = False,
) -> Path:
    """Validate the split and the listed sources, then write every listed item and the datalist, all or nothing.

    Args:
        global_spacing: record the items' common ``spacing`` as the datalist's (see :func:`_finish`).
    """
    validate_splits(assignment, shared_eval=split.get("test_from") == "val" or split.get("val_from") == "test")
    _probe(items, assignment)
    by_list = _assign(items, assignment)
    todo = _unique_items(by_list)
    if not by_list["labeled"]:
        raise DatasetPreparationError("the labelled list is empty")
    for item in todo:
        if not _SAFE_NAME.fullmatch(item.uid):
            raise _error(item.image, f"output id {item.uid!r} is not a plain file name; rename the source file")
    writer = write_2d if meta.dimensions == 2 else write_3d

    def write(folder: Path) -> Path:
        written = writer(todo, folder, num_classes, log_every)
        return _finish(folder, meta, by_list, written, split, global_spacing)

    LOG.info("converting %d %dD images into %s", len(todo), meta.dimensions, out.path)
    path = _write_all_or_nothing(write, out)
    counts = ", ".join(f"{key} {len(by_list[key])}" for key in LIST_KEYS)
    LOG.info("%s: wrote %d images (%s) to %s", meta.name, len(todo), counts, path)
    return path


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


def _check_unique_uids(items: list[Item]) -> None:
    """Raise when two source files map to the same output id."""
    seen: dict[str, Path] = {}
    for item in items:
        if item.uid in seen:
            raise _error(item.image, f"maps to the same id {item.uid!r} as {seen[item.uid]}")
        seen[item.uid] = item.image


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


def _find_list(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first existing list file among ``names`` in ``folders``."""
    for name in names:
        for directory in folders:
            if (directory / name).is_file():
                return directory / name
    return None
