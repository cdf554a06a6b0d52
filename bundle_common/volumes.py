# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""3D volume data of the bundles: reading and checking volumes, datalist loading, inference lists, the slice dataset.

The dataset format is the project's prepared format (``images/<id>.nii.gz``, ``labels/<id>.nii.gz`` with axes
(X, Y, Z), ``datalist.json`` with ``labeled``, ``unlabeled``, ``validation`` and ``test`` lists; NRRD, MHA and MHD
volumes are read too, through MONAI's ITK reader). Every problem a user can make with their data is reported before
training starts, as a :class:`DataError` naming the file and what is wrong. Volumes are read once per datalist (the
result is cached, :mod:`.datalist`) and none is kept in memory by the checks.

- :func:`check_datalist` and :func:`load_datalist`: a volume datalist checked up front, then one of its lists (the
  synthetic phantoms of :mod:`.phantom_3d` are generated on first use when asked).
- :func:`list_volumes`: the inference list of a folder of volumes, one volume or a list of them.
- :class:`SliceDataset`: every slice along the last axis of a list of volumes as a 2D item, for a 2D network trained
  on the slices of 3D volumes (ACDC) and evaluated per volume.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import apply_transform
from torch.utils.data import Dataset, Subset

from . import datalist as _datalist
from .errors import DataError

__all__ = [
    "IMAGE_2D_EXTS",
    "ITK_EXTS",
    "NIFTI_EXTS",
    "VOLUME_EXTS",
    "DataError",
    "SliceDataset",
    "check_datalist",
    "list_volumes",
    "load_datalist",
]

logger = logging.getLogger(__name__)

NIFTI_EXTS = (".nii", ".nii.gz")
ITK_EXTS = (".nrrd", ".mha", ".mhd")
VOLUME_EXTS = NIFTI_EXTS + ITK_EXTS
IMAGE_2D_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_PREPARE = "python scripts/prepare_data.py la|acdc|nifti"


# ----------------------------------------------------------------------------------------------------------------------
# reading and checking volumes
# ----------------------------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    """The file extension of ``path`` in lower case, with the two-part ``.nii.gz`` recognised as one."""
    name = path.name.lower()
    for ext in sorted(VOLUME_EXTS + IMAGE_2D_EXTS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _read_volume(path: Path, what: str) -> np.ndarray:
    """Read a whole volume (its data, not only the header) with a clear error for anything unreadable.

    NIfTI goes through nibabel; NRRD/MHA/MHD through MONAI's ``LoadImage`` with the ITK reader (axes (X, Y, Z) as
    nibabel gives them). 2D image files get a message saying that this bundle expects 3D volumes.

    Args:
        path: the volume file.
        what: how the messages name the file (``"labeled image"``).

    Returns:
        the volume's array as stored (no channel axis added or removed).

    Raises:
        DataError: a missing, empty, 2D or undecodable file, or an ITK format without ITK installed.
    """
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} is a folder, not a volume file ({', '.join(VOLUME_EXTS)}): {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} file is empty (0 bytes): {path}")
    ext = _suffix(path)
    if ext in IMAGE_2D_EXTS:
        raise DataError(
            f"{what} is a 2D image file ({ext}), but this bundle expects 3D volumes (X, Y, Z) in NIfTI, NRRD or MHA "
            f"(prepare them with scripts/prepare_data.py): {path}"
        )
    try:
        if ext in ITK_EXTS:
            from monai.data import ITKReader  # noqa: PLC0415
            from monai.transforms import LoadImage  # noqa: PLC0415
            from monai.utils import optional_import  # noqa: PLC0415

            if not optional_import("itk")[1]:
                raise DataError(f"{what} is {ext}, which needs ITK (`pip install itk`) to be read: {path}")
            arr = np.asarray(LoadImage(image_only=True)(str(path), reader=ITKReader()))
        else:  # NIfTI, or anything nibabel recognises
            import nibabel as nib  # noqa: PLC0415

            arr = np.asarray(nib.load(str(path)).dataobj)  # reads (and decompresses) the data: catches truncation
    except DataError:
        raise
    except Exception as e:  # any decoder error: truncated gzip, corrupt header, wrong format
        raise DataError(f"{what} file cannot be read as a volume ({_brief(e)}): {path}") from None
    return arr


def _brief(e: BaseException) -> str:
    """``Type: message`` of a reader's exception, without the multi-line dumps some readers add."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines[:3])
    return f"{type(e).__name__}: {text[:300]}"


def _spatial(arr: np.ndarray, path: Path, what: str, spatial_dims: int) -> np.ndarray:
    """``arr`` with a trailing singleton channel axis dropped; a clear error for 2D images and multi-channel data.

    Raises:
        DataError: ``arr`` is not a single-channel ``spatial_dims``-D volume.
    """
    if arr.ndim == spatial_dims + 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == spatial_dims:
        return arr
    if arr.ndim < spatial_dims:
        raise DataError(
            f"{what} is {arr.ndim}D (shape {arr.shape}), but this bundle expects {spatial_dims}D volumes (X, Y, Z); "
            f"2D images are for the 2D bundles (switch_us, mgcc_us): {path}"
        )
    if arr.ndim == spatial_dims + 1:
        raise DataError(
            f"{what} has shape {arr.shape}: {arr.shape[-1]} channels (or time points), but this bundle takes "
            f"single-channel {spatial_dims}D volumes (wrong channel count; a trailing channel axis of size 1 is fine): "
            f"{path}"
        )
    raise DataError(f"{what} has {arr.ndim} dimensions (shape {arr.shape}); expected a {spatial_dims}D volume: {path}")


def _check_item(item: dict, split: str, num_classes: int, spatial_dims: int) -> np.ndarray | None:
    """Read one datalist item's volumes and check them (:func:`check_datalist`).

    Returns:
        the label's distinct values, or None for an item without a label.

    Raises:
        DataError: naming the file and the problem.
    """
    img_path = Path(item["image"])
    what = f"{split} image"
    img = _spatial(_read_volume(img_path, what), img_path, what, spatial_dims)
    if not (np.issubdtype(img.dtype, np.number) or img.dtype == np.bool_):
        raise DataError(f"{what} has data type {img.dtype}; expected numbers: {img_path}")
    if np.issubdtype(img.dtype, np.inexact) and not np.isfinite(img).all():
        raise DataError(f"{what} contains NaN or infinite values: {img_path}")
    _datalist.check_image_content(img, img_path, what, img.shape)
    shape = img.shape
    del img  # keep memory bounded: one volume at a time
    if not isinstance(item.get("label"), str):
        return None
    lab_path = Path(item["label"])
    what = f"{split} label"
    raw = _read_volume(lab_path, what)
    if raw.ndim == spatial_dims + 1 and raw.shape[-1] > 1:
        raise DataError(
            f"{what} has shape {raw.shape}: a label must be one map of class indices (X, Y, Z), not one channel per "
            f"class: {lab_path}"
        )
    lab = _spatial(raw, lab_path, what, spatial_dims)
    if lab.shape != shape:
        raise DataError(f"{what} shape {lab.shape} differs from its image shape {shape}: {lab_path} vs {img_path}")
    return _datalist.check_label_values(lab, num_classes, what, lab_path)


# ----------------------------------------------------------------------------------------------------------------------
# datalists
# ----------------------------------------------------------------------------------------------------------------------


def check_datalist(
    datalist_file: str | os.PathLike,
    num_classes: int = 2,
    spatial_dims: int = 3,
    required: Sequence[str] = ("labeled",),
    check_files: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Check a datalist and the volumes it names; return the parsed JSON.

    Checks: valid JSON object, the ``required`` lists present and non-empty, every item with an image (and a label
    outside ``unlabeled``), no image or case in two lists (validation and test may share cases when the datalist
    records ``"test_from": "val"``), valid spacing, and for each item (``check_files``) that the image and label
    exist, are not empty, decode completely, are ``spatial_dims``-D single-channel volumes (a trailing channel axis of
    size 1 is accepted), have the same shape, the image is finite and the label holds class indices
    ``0..num_classes-1``. The result is cached per datalist (path, modification time, arguments) and redone when a
    named file changed; no volume is kept in memory.

    Args:
        datalist_file: the ``datalist.json``.
        num_classes: classes a label may hold.
        spatial_dims: the volumes' spatial dimensions.
        required: the lists that must be present and non-empty.
        check_files: read and check every volume; False checks the JSON only.
        class_names: the classes' names, for the warning about a declared class that no label holds.

    Returns:
        the parsed datalist.

    Raises:
        DataError: naming the file and the problem.
    """
    return _datalist.check_datalist(datalist_file, _check_item, num_classes=num_classes, spatial_dims=spatial_dims,
                                    required=required, check_files=check_files, prepare_hint=_PREPARE,
                                    class_names=class_names)


def load_datalist(
    dataset_dir: str,
    key: str = "labeled",
    num_classes: int = 2,
    datalist_file: str | None = None,
    generate_phantom: bool = False,
    phantom_kind: str = "la",
    check_files: bool = True,
    limit: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """The ``key`` list of the dataset in ``dataset_dir``, with absolute paths, after checking the whole datalist.

    Each item carries ``"spacing"`` (its own, else the datalist's global one) unless the datalist says
    ``"spacing_known": false``.

    Args:
        dataset_dir: the prepared dataset folder.
        key: ``labeled``, ``unlabeled``, ``validation`` or ``test``; an absent or empty list gives ``[]``.
        num_classes: classes a label may hold.
        datalist_file: the datalist (default ``dataset_dir/datalist.json``).
        generate_phantom: generate the synthetic phantom dataset (:mod:`.phantom_3d`) into ``dataset_dir`` if it is
            missing.
        phantom_kind: ``la`` (3D atrium-like volumes) or ``acdc`` (cardiac-like stacks), for ``generate_phantom``.
        check_files: read and check every volume once (cached); False checks the JSON only.
        limit: keep only the first ``limit`` items (quick runs).
        class_names: the classes' names, for the warning about a declared class that no label holds.

    Returns:
        the list's items (``image``, ``label`` outside ``unlabeled``, ``case``, ``spacing``...), paths made absolute.

    Raises:
        DataError: naming the file and the problem.
    """
    if generate_phantom:
        from .phantom_3d import ensure_phantom_dataset  # noqa: PLC0415

        ensure_phantom_dataset(dataset_dir, kind=phantom_kind)
    return _datalist.load_datalist(datalist_file or os.path.join(dataset_dir, "datalist.json"), key, _check_item,
                                   num_classes=num_classes, spatial_dims=3, check_files=check_files, limit=limit,
                                   prepare_hint=_PREPARE, class_names=class_names)


def list_volumes(inputs: str | os.PathLike | Sequence[str | os.PathLike], output_keys: str = "image") -> list[dict]:
    """Inference datalist from a folder of volumes (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``), one volume
    path, or a list of paths.

    Args:
        inputs: a folder (its volume files, sorted by name; hidden files skipped), a volume file, or a list of either.
        output_keys: the key of each item's path.

    Returns:
        one ``{output_keys: path}`` item per volume.

    Raises:
        DataError: a path that does not exist, an empty file, a folder without volumes, or a file of another format.
    """
    paths: list[Path] = []
    for p in [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs):
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and _suffix(f) in VOLUME_EXTS)
            if not found:
                raise DataError(f"no volumes ({', '.join(VOLUME_EXTS)}) in the folder {p}")
            paths.extend(found)
        elif p.is_file():
            if _suffix(p) not in VOLUME_EXTS:
                raise DataError(f"input is not a volume file ({', '.join(VOLUME_EXTS)}): {p}")
            paths.append(p)
        else:
            raise DataError(f"input volume not found: {p}")
    for p in paths:
        if p.stat().st_size == 0:
            raise DataError(f"input volume file is empty (0 bytes): {p}")
        if _suffix(p) in NIFTI_EXTS:  # header only: cheap, catches garbage files before inference starts
            import nibabel as nib  # noqa: PLC0415

            try:
                nib.load(str(p))
            except Exception as e:
                raise DataError(f"input volume cannot be read ({_brief(e)}): {p}") from None
    return [{output_keys: str(p)} for p in paths]


# ----------------------------------------------------------------------------------------------------------------------
# slices of volumes (ACDC: a 2D network trained on the slices of 3D volumes)
# ----------------------------------------------------------------------------------------------------------------------


def _load_array(path: str, what: str) -> np.ndarray:
    """A volume's array for :class:`SliceDataset`: NIfTI read by nibabel, other formats by :func:`_read_volume`.

    Raises:
        DataError: a missing or undecodable file.
    """
    p = Path(path)
    if _suffix(p) in NIFTI_EXTS:
        import nibabel as nib  # noqa: PLC0415

        try:
            return np.asarray(nib.load(str(p)).dataobj)
        except FileNotFoundError:
            raise DataError(f"{what} file not found: {p}") from None
        except Exception as e:
            raise DataError(f"{what} file cannot be read as a volume ({_brief(e)}): {p}") from None
    return _read_volume(p, what)


class SliceDataset(Dataset):
    """Every slice along the last axis of a list of volumes, as 2D channel-first items (ACDC training).

    Each volume of ``data`` is read once (NIfTI via nibabel, other formats via MONAI's ITK reader) and kept in memory
    (float32 images, uint8 labels, stored slice-major). Item ``i`` is ``transform({"image": (1, H, W) float32 tensor,
    "label": (1, H, W) uint8 tensor (when the volume has a label), "case": ..., "slice": k})``. Like MONAI's datasets
    it exposes ``data`` (here the ``(volume, slice)`` index list) and ``transform``, so the loaders can seed the
    transform for every draw.

    Args:
        data: datalist items (``image``, optional ``label``, optional ``case``), e.g. from :func:`load_datalist`.
        transform: a MONAI transform on 2D channel-first dicts (e.g. crossmatch_3d's
            ``scripts.transforms.acdc_train_transforms``).
        keys: the image key, then the label key(s) to read when an item has them.
        min_foreground: keep only the slices of labelled volumes with at least this many foreground (> 0) pixels
            (0 keeps every slice; slices of unlabelled volumes are always kept).
        intensity: a dictionary transform applied to each whole volume's ``image`` when it is read (for example
            ``scripts.common.intensity.ScaleToUnitd``), as the evaluation applies it to the whole test volume.
        volume_transform: instead of reading the files directly, pass each item's ``{key: path}`` through this
            dictionary transform, which loads and preprocesses the whole volume and its label together and returns
            channel-first volumes ``(1, H, W, Z)`` (localcontrast_2d: percentile scaling, in-plane resampling and
            crop or pad, ``scripts.transforms.preprocess_transforms``).
        min_classes: keep only the slices of labelled volumes whose label holds at least this many distinct values,
            background included (0 keeps every slice; ``num_classes`` keeps the slices that hold every class).

    Raises:
        DataError: an item without its image key, an unreadable volume, or a label whose shape differs from its image.
    """

    def __init__(self, data: Sequence[dict], transform: Any = None, keys: Sequence[str] = ("image", "label"),
                 min_foreground: int = 0, intensity: Callable | None = None, volume_transform: Callable | None = None,
                 min_classes: int = 0) -> None:
        self.transform = transform
        self.keys = tuple(keys)
        self.min_foreground = int(min_foreground)
        self.min_classes = int(min_classes)
        self._volumes: list[dict[str, np.ndarray]] = []
        self._cases: list[Any] = []
        self.data: list[tuple[int, int]] = []
        if data:
            logger.info(f"loading {len(data)} volumes into memory for slice-wise training")
        for v, item in enumerate(data):
            if self.keys[0] not in item:
                raise DataError(f"a slice dataset item has no '{self.keys[0]}': {item!r}")
            arrays: dict[str, np.ndarray] = {}
            volumes = None
            if volume_transform is not None:  # the whole item at once: spatial transforms move image and label
                volumes = volume_transform({k: item[k] for k in self.keys if k in item})
            for i, k in enumerate(self.keys):
                if k not in item:
                    continue
                what = "image" if i == 0 else k
                if volumes is not None:
                    arr = np.asarray(torch.as_tensor(volumes[k]).detach().cpu())
                    arr = _spatial(arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr, Path(item[k]), what, 3)
                else:
                    arr = _spatial(_load_array(item[k], what), Path(item[k]), what, 3)
                if i == 0 and intensity is not None:
                    arr = np.asarray(intensity({k: torch.as_tensor(arr, dtype=torch.float32)})[k])
                arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))  # (Z, H, W): every slice contiguous
                arrays[k] = arr.astype(np.float32 if i == 0 else np.uint8, copy=False)
            shape = arrays[self.keys[0]].shape
            for k, arr in arrays.items():
                if arr.shape != shape:
                    raise DataError(
                        f"{k} shape {arr.shape[1:] + arr.shape[:1]} differs from its image shape "
                        f"{shape[1:] + shape[:1]}: {item[k]} vs {item[self.keys[0]]}"
                    )
            labels = [arrays[k] for k in self.keys[1:] if k in arrays]
            for z in range(shape[0]):
                if self.min_foreground > 0 and labels and int((labels[0][z] > 0).sum()) < self.min_foreground:
                    continue
                if self.min_classes > 0 and labels and len(np.unique(labels[0][z])) < self.min_classes:
                    continue
                self.data.append((v, z))
            self._volumes.append(arrays)
            self._cases.append(item.get("case", Path(item[self.keys[0]]).name.split(".")[0]))
        if data:
            logger.info(f"{len(self.data)} slices from {len(data)} volumes")

    def __len__(self) -> int:
        """The number of slices kept."""
        return len(self.data)

    def slice_item(self, index: int) -> dict:
        """Item ``index`` before the transform."""
        v, z = self.data[index]
        out: dict[str, Any] = {k: torch.from_numpy(arr[z][None].copy()) for k, arr in self._volumes[v].items()}
        out["case"], out["slice"] = self._cases[v], z
        return out

    def __getitem__(self, index: int | slice | Sequence[int]) -> Any:
        """Slice ``index`` through the transform; a ``Subset`` for a slice or a sequence of indices."""
        if isinstance(index, slice):
            return Subset(dataset=self, indices=range(len(self))[index])
        if isinstance(index, Sequence) and not isinstance(index, str):
            return Subset(dataset=self, indices=list(index))
        item = self.slice_item(int(index))
        return apply_transform(self.transform, item) if self.transform is not None else item

    def without_labels(self, transform: Any = None) -> SliceDataset:
        """A view of the same slices (memory shared) without the labels, through ``transform``."""
        view = copy.copy(self)
        view.transform = transform
        view._volumes = [{k: a for k, a in vol.items() if k == self.keys[0]} for vol in self._volumes]
        return view
