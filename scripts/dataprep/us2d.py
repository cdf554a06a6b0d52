# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Converters of 2D ultrasound layouts: ``busi``, ``ddti``, ``hc18``, ``switch`` and ``folder``."""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import (
    LOG,
    Item,
    Meta,
    _case_of,
    _check_dir,
    _check_file,
    _check_unique_uids,
    _class_names,
    _error,
    _inside,
    _open_image,
    _pair_folders,
    _prepare_output,
    _read_id_list,
    _read_text,
    _require_items,
    _run,
    _safe_id,
    _seeded_split_meta,
    _split_with_unlabeled_only,
    _tool_string,
    probe_2d,
    read_grey,
    read_label_indices,
    read_mask_foreground,
    split_cases,
)

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


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


def _check_sources(source: str | Sequence[str], what: str) -> list[Path]:
    """The source folders of a converter: one path, several separated by commas, or a list.

    Several folders of one layout (``BUSI`` and ``BUSI_more``) are read as one dataset and split together, so
    nobody copies folders by hand; an image ID found in two of them is refused by name.
    """
    if isinstance(source, (list, tuple)):
        parts = [str(part) for part in source]
    else:
        parts = [part.strip() for part in str(source).split(",")] if source is not None else [""]
    parts = [part for part in parts if part] or [""]
    folders = [_check_dir(part, what) for part in parts]
    duplicates = sorted({str(f) for f in folders if folders.count(f) > 1})
    if duplicates:
        raise _error(duplicates[0], f"{what} folder given twice")
    return folders


def _source_string(folders: Sequence[Path]) -> str:
    """The source folders as the datalist records them (comma-separated)."""
    return ",".join(str(f) for f in folders)


def busi(
    source: str | Sequence[str],
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
        source: the folder holding ``Dataset_BUSI_with_GT`` (or that folder itself); several such folders
            separated by commas (``../shared/data/BUSI,../shared/data/BUSI_more``) are merged into one dataset.
        output: the output folder.
        exclude_normal: drop the ``normal`` class (its masks are empty).
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    sources = _check_sources(source, "source")
    items = []
    roots = [src / "Dataset_BUSI_with_GT" if (src / "Dataset_BUSI_with_GT").is_dir() else src for src in sources]
    class_dirs = [p for root in roots for p in sorted(q for q in root.iterdir() if q.is_dir())]
    for class_dir in class_dirs:
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
            reader = functools.partial(_read_image_and_masks, image, masks)
            probe = functools.partial(probe_2d, image, masks, "mask")
            items.append(Item(uid, uid, image, reader, label=masks[0], probe=probe))
    _require_items(items, roots[0])
    _check_unique_uids(items)
    out = _prepare_output(output, sources, overwrite)
    assignment = split_cases(
        (it.case for it in items), labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "source": _source_string(sources),
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
        {"format": "busi", "path": _source_string(sources), "tool": _tool_string("busi", options)},
    )
    split = _seeded_split_meta(seed, "image", labeled_ratio, val_ratio, test_ratio)
    return _run(items, assignment, out=out, meta=meta, split=split, num_classes=2, log_every=log_every)


def _ddti_items(images_dir: Path, masks_dir: Path) -> list[Item]:
    """The DDTI crops of one ``cropped/`` folder with their ``mask/`` files; a patient is the number before ``_``."""
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
        reader = functools.partial(_read_image_and_masks, image, [mask])
        probe = functools.partial(probe_2d, image, [mask], "mask")
        items.append(Item(uid, case, image, reader, label=mask, probe=probe))
    return items


def ddti(
    source: str | Sequence[str],
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
        source: the folder holding ``cropped/`` and ``mask/``; several such folders separated by commas
            (``../shared/data/DDTI,../shared/data/DDTI_more``) are merged into one dataset, a patient's images
            from any of them landing in one list.
        output: the output folder.
        seed: seed of the split.
        labeled_ratio: labelled fraction of the training cases.
        val_ratio: validation fraction of all cases.
        test_ratio: test fraction of all cases.
        name: dataset name in the datalist.
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    sources = _check_sources(source, "source")
    folders = [(_check_dir(src / "cropped", "image (cropped/)"), _check_dir(src / "mask", "mask")) for src in sources]
    items = []
    for images_dir, masks_dir in folders:
        items += _ddti_items(images_dir, masks_dir)
    _require_items(items, folders[0][0])
    _check_unique_uids(items)
    out = _prepare_output(output, sources, overwrite)
    assignment = split_cases(
        (it.case for it in items), labeled_ratio=labeled_ratio, val_ratio=val_ratio, test_ratio=test_ratio, seed=seed
    )
    options = {
        "source": _source_string(sources),
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
        {"format": "ddti", "path": _source_string(sources), "tool": _tool_string("ddti", options)},
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
    with io.StringIO(_read_text(csv_path, "pixel size csv")) as handle:
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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
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
        probe = functools.partial(probe_2d, image, [annotation], "annotation")
        items.append(
            Item(
                _safe_id(image.stem),
                match.group(1),
                image,
                reader,
                label=annotation,
                extra={"spacing": spacing},
                probe=probe,
            )
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
    """Find the file a list line names (with or without a ``.png`` suffix); it must be inside ``folder``."""
    for candidate in (_inside(folder, entry, list_file), _inside(folder, f"{entry}.png", list_file)):
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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
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
            probe = functools.partial(probe_2d, image, [label], "label")
            items.setdefault(uid, Item(uid, uid, image, reader, label=label, probe=probe))
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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
        log_every: log progress every this many images.

    Returns:
        The path of ``datalist.json``.
    """
    images_dir, labels_dir = _check_dir(images, "images"), _check_dir(labels, "labels")
    items = []
    for stem, image, label in _pair_folders(images_dir, labels_dir, IMAGE_2D_SUFFIXES, unlabeled_without_label):
        uid = _safe_id(stem)
        reader = functools.partial(_read_image_and_label, image, label, num_classes)
        probe = functools.partial(probe_2d, image, [label] if label is not None else [], "label")
        case = _case_of(uid, case_pattern)
        items.append(Item(uid, case, image, reader, label=label, has_label=label is not None, probe=probe))
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
