# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Converters of 3D volumes: ``la`` and ``acdc`` (the literature's HDF5 files) and ``nifti`` (NIfTI/NRRD/MHA, MSD).

Also the integer downsampling of ``la --downsample``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    DatasetPreparationError,
    Item,
    Meta,
    _case_of,
    _check_dir,
    _check_file,
    _check_unique_uids,
    _class_names,
    _error,
    _eval_ratios,
    _find_list,
    _pair_folders,
    _prepare_output,
    _read_id_list,
    _read_text,
    _require_items,
    _run,
    _safe_id,
    _seeded_split_meta,
    _split_eval,
    _split_with_unlabeled_only,
    _strip_suffix,
    _tool_string,
    _unique,
    split_cases,
)

IMAGE_3D_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LA_SPACING = (0.625, 0.625, 0.625)
ACDC_PRESETS = {
    1: ("099",),
    3: ("038", "050", "099"),
    7: ("021", "038", "049", "050", "058", "099", "100"),
}
ACDC_LABELS = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}


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


def _probe_h5(path: Path, ndim: int) -> tuple[tuple[int, ...], bool]:
    """Check an HDF5 file without reading its arrays: a numeric ``image`` of ``ndim`` axes, a ``label`` of its shape.

    Returns:
        The image shape, and whether the file holds a ``label``.
    """
    import h5py

    _check_file(path, "HDF5")
    try:
        with h5py.File(path, "r") as handle:
            keys = sorted(handle.keys())
            image, label = handle.get("image"), handle.get("label")
            if not isinstance(image, h5py.Dataset):
                raise _error(path, f"missing key(s) ['image'] (has {keys})")
            for key, data in (("image", image), ("label", label)):
                if data is not None and (not isinstance(data, h5py.Dataset) or data.dtype.kind not in "biuf"):
                    raise _error(path, f"{key!r} is not an array of numbers (has {keys})")
            if image.ndim != ndim:
                raise _error(path, f"expected a {ndim}D 'image', got shape {image.shape}")
            if label is not None and label.shape != image.shape:
                raise _error(path, f"label shape {label.shape} differs from image shape {image.shape}")
            return image.shape, label is not None
    except DatasetPreparationError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise _error(path, f"cannot read HDF5 file ({type(exc).__name__}: {exc})") from exc


def _probe_h5_volume(path: Path) -> bool:
    """Check a 3D HDF5 volume up front (see :func:`_probe_h5`); return whether it has a label."""
    return _probe_h5(path, 3)[1]


def _probe_h5_slices(paths: Sequence[Path]) -> bool:
    """Check the 2D HDF5 slices of one frame up front: one shape; return whether every slice has a label."""
    shapes: dict[tuple[int, ...], Path] = {}
    labelled = True
    for path in paths:
        shape, has_label = _probe_h5(path, 2)
        shapes.setdefault(shape, path)
        if len(shapes) > 1:
            raise _error(path, f"slice shape {shape} differs from the frame's other slices ({next(iter(shapes))})")
        labelled &= has_label
    return labelled


def _probe_files(image: Path, label: Path | None) -> bool:
    """Check that an image volume and its label (if any) are non-empty files; return whether it has a label."""
    _check_file(image, "image")
    if label is not None:
        _check_file(label, "label")
    return label is not None


def _read_case_list(path: Path) -> list[str]:
    """Read a list of case folder names (see :func:`_read_id_list`); every entry must be one plain folder name."""
    ids = _read_id_list(path)
    for case in ids:
        if case in (".", "..") or "/" in case or "\\" in case:
            raise _error(path, f"lists {case!r}, which is not a case folder name; list the case folders by name")
    return ids


def _read_la(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Read a UA-MT ``mri_norm2.h5`` volume (X, Y, Z) with 0.625 mm isotropic spacing."""
    data = _read_h5(path, ["image"], ["label"])
    image, label = data["image"].astype(np.float32), data.get("label")
    if label is not None and label.shape != image.shape:
        raise _error(path, f"label shape {label.shape} differs from image shape {image.shape}")
    return image, label, np.diag([*LA_SPACING, 1.0])


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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
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
        train = _read_case_list(train_file)
        label_file = _find_list(folders, [f"train_{num_labeled}_label.list"]) or train_file
        labelled_source = _read_case_list(label_file)
    else:
        label_file = _find_list(folders, ["labeled.list"])
        if label_file is None:
            raise _error(src, "no train.list or labeled.list found")
        labelled_source = _read_case_list(label_file)
        unlabeled_file = _find_list(folders, ["unlabeled.list"])
        train = _unique(labelled_source + (_read_case_list(unlabeled_file) if unlabeled_file else []))
    if num_labeled < 1 or num_labeled > len(labelled_source):
        raise _error(label_file, f"--num_labeled {num_labeled} but the list holds {len(labelled_source)} ids")
    labelled = labelled_source[:num_labeled]
    train = _unique(train + [c for c in labelled if c not in train])
    unlabelled = [c for c in train if c not in set(labelled)]
    val_file, test_file = _find_list(folders, ["val.list"]), _find_list(folders, ["test.list"])
    val, test, notes = _split_eval(
        _read_case_list(val_file) if val_file else None,
        _read_case_list(test_file) if test_file else None,
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
        reader, probe = functools.partial(_read_la, path), functools.partial(_probe_h5_volume, path)
        items.append(Item(_safe_id(case), case, path, reader, label=path, probe=probe))
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
    return _run(
        items,
        assignment,
        out=out,
        meta=meta,
        split=split,
        num_classes=2,
        log_every=log_every,
        global_spacing=downsample > 1,
    )


def _acdc_patient(text: str) -> str:
    """Normalise ``38``, ``'038'`` or ``'patient038'`` to ``'patient038'``."""
    match = re.search(r"(\d+)", str(text))
    if match is None:
        raise DatasetPreparationError(f"cannot read an ACDC patient number from {text!r}")
    return f"patient{int(match.group(1)):03d}"


def _acdc_patients_in(path: Path) -> list[str]:
    """Patients named in an SSL4MIS list file (slice or volume names), in first-seen order."""
    return _unique(f"patient{m}" for m in re.findall(r"patient(\d{3})", _read_text(path, "list file")))


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
                    probe=functools.partial(_probe_h5_volume, volumes[frame]),
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
        reader, probe = functools.partial(_read_acdc_slices, paths), functools.partial(_probe_h5_slices, paths)
        items.append(Item(uid, case, paths[0], reader, label=paths[0], probe=probe))
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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
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
        reader = functools.partial(_read_nifti_pair, image, label, channel)
        probe = functools.partial(_probe_files, image, label)
        items.append(Item(uid, uid, image, reader, label=label, probe=probe))
    for entry in spec.get("test", []) if use_test else []:
        image = (base / (entry["image"] if isinstance(entry, dict) else entry)).resolve()
        uid = _safe_id(_strip_suffix(image.name, IMAGE_3D_SUFFIXES))
        reader, probe = (
            functools.partial(_read_nifti_pair, image, None, channel),
            functools.partial(_probe_files, image, None),
        )
        items.append(Item(uid, uid, image, reader, has_label=False, probe=probe))
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
        overwrite: replace the dataset an earlier run prepared in the output folder (as a whole, once the new
            one is complete).
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
            probe = functools.partial(_probe_files, image, label)
            items.append(Item(uid, uid, image, reader, label=label, has_label=label is not None, probe=probe))
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
    return _run(
        items,
        assignment,
        out=out,
        meta=meta,
        split=split,
        num_classes=num_classes,
        log_every=log_every,
        global_spacing=True,
    )


def _recording_spacing(item: Item) -> Callable[[], tuple]:
    """Wrap an item's reader so that it stores the affine's voxel size as the item's ``spacing``."""
    read = item.read

    def read_and_record() -> tuple:
        image, label, affine = read()
        item.extra["spacing"] = [round(float(s), 6) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]
        return image, label, affine

    return read_and_record
