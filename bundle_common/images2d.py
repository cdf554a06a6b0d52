# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""2D image data of the bundles: datalist loading with up-front input checks, grey conversion, the two-stream loader.

The dataset format is the project's prepared format (``images/``, ``labels/``, ``datalist.json`` with
``labeled``, ``unlabeled``, ``validation`` and ``test`` lists). Every problem a user can make with their
data is reported before training starts, as a :class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch.utils.data import Dataset

from . import datalist as _datalist
from .errors import DataError
from .keys import UNLABELED
from .sampling import StreamLoader

__all__ = [
    "DataError",
    "EnsureGreyd",
    "PixelSpacingToMetad",
    "TwoStreamLoader",
    "check_datalist",
    "list_images",
    "load_datalist",
]

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def _read_2d(path: Path, what: str) -> np.ndarray:
    """Read a 2D image as a (H, W) or (H, W, C) array, with a clear error for anything unreadable."""
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} file is empty (0 bytes): {path}")
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
            import nibabel as nib  # noqa: PLC0415  (only for volume formats)

            arr = np.asarray(nib.load(str(path)).dataobj)
        else:
            from PIL import Image  # noqa: PLC0415

            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
    except Exception as e:  # any decoder error: truncated, corrupt, wrong format
        raise DataError(f"{what} file cannot be read as an image ({type(e).__name__}: {e}): {path}") from None
    return arr


def _check_item(item: dict, split: str, num_classes: int, spatial_dims: int = 2) -> np.ndarray | None:
    """Read one datalist item's image (and label) and check them (:func:`check_datalist`); the label's values."""
    img_path = Path(item["image"])
    img = _read_2d(img_path, f"{split} image")
    if img.ndim == 3 and img.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{split} image has shape {img.shape}: a 3D volume or an image with {img.shape[-1]} channels, but this "
            f"is a 2D bundle that takes grey, RGB or RGBA images: {img_path}"
        )
    if img.ndim not in (2, 3):
        raise DataError(f"{split} image has {img.ndim} dimensions (shape {img.shape}); expected a 2D image: {img_path}")
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        raise DataError(f"{split} image contains NaN or infinite values: {img_path}")
    _datalist.check_image_content(img, img_path, f"{split} image", img.shape[:2])
    if "label" not in item:
        return None
    lab_path = Path(item["label"])
    lab = _read_2d(lab_path, f"{split} label")
    if lab.ndim == 3 and lab.shape[-1] in (3, 4):
        lab = lab[..., 0]
    if lab.ndim != 2:
        raise DataError(f"{split} label has shape {lab.shape}; a 2D bundle needs a 2D label map: {lab_path}")
    if lab.shape != img.shape[:2]:
        raise DataError(
            f"{split} label size {lab.shape} differs from its image size {img.shape[:2]}: {lab_path} vs {img_path}"
        )
    return _datalist.check_label_values(lab, num_classes, f"{split} label", lab_path)


def check_datalist(datalist_file: str | os.PathLike, num_classes: int = 2, required: Sequence[str] = ("labeled",),
                   check_files: bool = True, class_names: Sequence[str] | None = None) -> dict:
    """Check a datalist and the images it names; return the parsed JSON.

    Checks (:func:`scripts.common.datalist.check_datalist`): valid JSON, the required lists present and non-empty,
    no image or case in two lists, and for each item the image (and label) exist, are not empty, decode, have
    matching sizes, are 2D, and the label values are class indices ``0..num_classes-1``. Results are cached.

    Raises:
        DataError: naming the file and the problem.
    """
    return _datalist.check_datalist(datalist_file, _check_item, num_classes=num_classes, spatial_dims=2,
                                    required=required, check_files=check_files, class_names=class_names)


def load_datalist(
    dataset_dir: str,
    key: str = "labeled",
    num_classes: int = 2,
    datalist_file: str | None = None,
    generate_phantom: bool = False,
    check_files: bool = True,
    limit: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """The ``key`` list of the dataset in ``dataset_dir``, with absolute paths, after checking the whole datalist.

    Args:
        dataset_dir: the prepared dataset folder.
        key: ``labeled``, ``unlabeled``, ``validation`` or ``test``.
        num_classes: classes a label may hold.
        datalist_file: the datalist (default ``dataset_dir/datalist.json``).
        generate_phantom: generate the synthetic ultrasound phantoms (:mod:`.phantom_us`) into ``dataset_dir`` if
            they are missing.
        check_files: decode and check every file (fast for 2D data); False checks the JSON only.
        limit: keep only the first ``limit`` items (quick runs).
        class_names: the classes' names, for the warning about a declared class that no label holds.
    """
    if generate_phantom:
        from .phantom_us import ensure_phantom_dataset  # noqa: PLC0415

        ensure_phantom_dataset(dataset_dir)
    return _datalist.load_datalist(datalist_file or os.path.join(dataset_dir, "datalist.json"), key, _check_item,
                                   num_classes=num_classes, spatial_dims=2, check_files=check_files, limit=limit,
                                   class_names=class_names)


def list_images(inputs: str | Sequence[str], output_keys: str = "image") -> list[dict]:
    """Inference datalist from a folder of images, one image path, or a list of paths.

    Raises:
        DataError: a path that does not exist or a folder without images.
    """
    paths: list[Path] = []
    for p in [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs):
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in the folder {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"input image not found: {p}")
    for p in paths:
        _read_2d(p, "input image")
    return [{output_keys: str(p)} for p in paths]


class TwoStreamLoader(StreamLoader):
    """Two endless, replayable data streams zipped into two-stream batches.

    Each batch is a labelled batch (``image``, ``label``, ...) plus ``unlabeled_image`` from the unlabelled
    stream; both cycle forever, so the trainer's ``epoch_length`` sets the epoch. The order of the images and
    the random augmentations are a function of ``seed`` and the position in the stream only: the loader's
    ``state_dict`` (the number of batches consumed) is saved with the training checkpoints, and a resumed run
    sees exactly the batches an uninterrupted run would have seen (:mod:`scripts.common.sampling`, the ``"torch"``
    scheme). In distributed runs each rank draws from its own share of every pass. Without unlabelled data (MONAI Label provides only labelled pairs) the labelled
    images serve as the unlabelled stream, with a warning, unless ``fallback`` is False.

    Args:
        labeled: dataset of the labelled stream.
        unlabeled: dataset of the unlabelled stream, or None.
        batch_size: labelled images per batch.
        unlabeled_batch_size: unlabelled images per batch (default ``batch_size``).
        num_workers: data loading worker processes per stream.
        seed: the seed of both streams.
        unlabeled_key: key of the unlabelled images in the batch.
        fallback: without unlabelled data, use the labelled images as the unlabelled stream (else the batches
            have no unlabelled images, e.g. for the supervised baseline).
    """

    def __init__(
        self,
        labeled: Dataset,
        unlabeled: Dataset | None = None,
        batch_size: int = 8,
        unlabeled_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        unlabeled_key: str = UNLABELED,
        fallback: bool = True,
    ) -> None:
        super().__init__(labeled, unlabeled, batch_size, unlabeled_batch_size, num_workers, seed, fallback,
                         scheme="torch")
        self.unlabeled_key = unlabeled_key
        if self.unlabeled is None and fallback:
            logger.warning("no unlabelled data: the labelled images (without labels) are used as the unlabelled stream.")

    def __iter__(self) -> Iterator[dict]:
        lab = self.stream(self.labeled, self.batch_size, self.seed)
        unl = self.stream(self.unlabeled, self.unlabeled_batch_size, self.seed + 1) if self.unlabeled is not None else None
        for batch in lab:
            out = dict(batch)
            if unl is not None:
                out[self.unlabeled_key] = next(unl)["image"]
            elif self.fallback:
                out[self.unlabeled_key] = torch.as_tensor(batch["image"]).flip(0)
            self.consumed += 1
            yield out


class EnsureGreyd(MapTransform):
    """Turn RGB(A)-encoded grey images into one channel (mean of the colour channels, alpha dropped).

    Ultrasound PNGs are often saved as RGB, some with coloured caliper marks; a channel-first image with 3
    or 4 channels becomes 1 channel, a 1-channel image is returned unchanged.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] in (3, 4):
                d[key] = img[:3].mean(dim=0, keepdim=True)
            elif img.shape[0] != 1:
                raise ValueError(f"'{key}' has {img.shape[0]} channels; expected a grey, RGB or RGBA image.")
        return d


class PixelSpacingToMetad(MapTransform):
    """Copy an item's native pixel spacing (``spacing`` entry of the datalist) into the image's meta data.

    Engines keep only ``image``, ``label`` and ``pred`` in their output, so the spacing travels with the
    image as ``meta["pixel_spacing"]`` for the evaluation report.
    """

    def __init__(self, keys: KeysCollection, spacing_key: str = "spacing", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        spacing = d.get(self.spacing_key)
        if spacing is None:
            return d
        for key in self.key_iterator(d):
            if hasattr(d[key], "meta"):
                d[key].meta["pixel_spacing"] = torch.as_tensor(spacing, dtype=torch.float64)
        return d
