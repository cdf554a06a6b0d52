# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Data of the Switch bundle: datalist loading with up-front input checks, and the two-stream loader.

The dataset format is the project's prepared format (``images/``, ``labels/``, ``datalist.json`` with
``labeled``, ``unlabeled``, ``validation`` and ``test`` lists). Every problem a user can make with their
data is reported before training starts, as a :class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, load_decathlon_datalist
from torch.utils.data import Dataset, Sampler

__all__ = ["DataError", "TwoStreamLoader", "check_datalist", "list_images", "load_datalist"]

logger = logging.getLogger(__name__)

SPLITS = ("labeled", "unlabeled", "validation", "test")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_CHECKED: dict[tuple, dict] = {}


class DataError(ValueError):
    """A problem with the user's data, found before training; the message names the file."""

    brief_report = True  # ``monai.bundle run`` shows its message without a traceback (scripts.utils.error_summary)


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


def _check_item(item: dict, split: str, num_classes: int, base: Path) -> None:
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
    if "label" not in item:
        return
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
    values = np.unique(lab)
    bad = values[(values < 0) | (values >= num_classes) | (values != np.round(values))]
    if bad.size:
        raise DataError(
            f"{split} label has values {bad[:8].tolist()} outside the declared classes 0..{num_classes - 1}: {lab_path}"
            " (labels must be class indices; prepare 0/255 masks with scripts/prepare_data.py)"
        )


def check_datalist(datalist_file: str | os.PathLike, num_classes: int = 2, required: Sequence[str] = ("labeled",),
                   check_files: bool = True) -> dict:
    """Check a datalist and the files it names; return the parsed JSON.

    Checks: valid JSON, the required lists present and non-empty, no image or case in two lists, and for
    each item the image (and label) exist, are not empty, decode, have matching sizes, are 2D, and the label
    values are class indices ``0..num_classes-1``. Results are cached per file and modification time.

    Raises:
        DataError: naming the file and the problem.
    """
    path = Path(datalist_file)
    if not path.is_file():
        raise DataError(
            f"datalist not found: {path}. Prepare a dataset with `python scripts/prepare_data.py` (see "
            "docs/dataset_format.md) and pass its folder as --dataset_dir."
        )
    key = (str(path.resolve()), path.stat().st_mtime_ns, num_classes, tuple(required), check_files)
    if key in _CHECKED:
        return _CHECKED[key]
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"datalist is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): {path}") from None
    if not isinstance(content, dict):
        raise DataError(f"datalist must be a JSON object with {', '.join(SPLITS)} lists: {path}")
    for split in required:
        if not content.get(split):
            raise DataError(f"the '{split}' list of {path} is missing or empty: it needs at least one item.")
    owner: dict[str, str] = {}
    for split in SPLITS:
        items = content.get(split) or []
        if not isinstance(items, list):
            raise DataError(f"'{split}' in {path} must be a list of items, got {type(items).__name__}.")
        for item in items:
            if not isinstance(item, dict) or "image" not in item:
                raise DataError(f"an item of '{split}' in {path} has no 'image' entry: {item!r}")
            if split != "unlabeled" and "label" not in item:
                raise DataError(f"an item of '{split}' in {path} has no 'label': {item['image']}")
            idents = [f"image {item['image']}"] + ([f"case {item['case']}"] if "case" in item else [])
            for ident in idents:
                prev = owner.setdefault(ident, split)
                if prev != split:
                    raise DataError(f"{ident} is in both the '{prev}' and the '{split}' lists of {path}: splits must not overlap.")
    if check_files:
        base = path.parent
        for split in SPLITS:
            items = content.get(split) or []
            if items:
                logger.info(f"checking {len(items)} {split} items of {path}")
            for item in _resolve(items, base):
                _check_item(item, split, num_classes, base)
    _CHECKED[key] = content
    return content


def _resolve(items: list[dict], base: Path) -> list[dict]:
    out = []
    for item in items:
        d = dict(item)
        for k in ("image", "label"):
            if k in d and not os.path.isabs(d[k]):
                d[k] = str(base / d[k])
        out.append(d)
    return out


def load_datalist(
    dataset_dir: str,
    key: str = "labeled",
    num_classes: int = 2,
    datalist_file: str | None = None,
    generate_phantom: bool = False,
    check_files: bool = True,
    limit: int | None = None,
) -> list[dict]:
    """The ``key`` list of the dataset in ``dataset_dir``, with absolute paths, after checking the whole datalist.

    Args:
        dataset_dir: the prepared dataset folder.
        key: ``labeled``, ``unlabeled``, ``validation`` or ``test``.
        num_classes: classes a label may hold.
        datalist_file: the datalist (default ``dataset_dir/datalist.json``).
        generate_phantom: generate the bundle's synthetic phantom dataset into ``dataset_dir`` if it is missing.
        check_files: decode and check every file (fast for 2D data); False checks the JSON only.
        limit: keep only the first ``limit`` items (quick runs).
    """
    if generate_phantom:
        from .phantom import ensure_phantom_dataset  # noqa: PLC0415

        ensure_phantom_dataset(dataset_dir)
    datalist_file = datalist_file or os.path.join(dataset_dir, "datalist.json")
    content = check_datalist(datalist_file, num_classes=num_classes, check_files=check_files)
    if not content.get(key):
        return []
    items = load_decathlon_datalist(datalist_file, is_segmentation=True, data_list_key=key)
    spacing = content.get("spacing")
    if spacing is not None and content.get("spacing_known", True):
        for item in items:  # the dataset's pixel spacing, unless an item has its own
            item.setdefault("spacing", list(spacing))
    return items[:limit] if limit else items


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


class _SeededSampler(Sampler):
    """Endless, replayable sample order: ``(index, sample_seed)`` pairs from ``start`` on.

    Each pass over the dataset is a permutation drawn from ``seed`` and the pass number (a rank's share of
    it in distributed runs), and every draw gets its own transform seed, so the stream from any position is
    the same whether or not the run was interrupted before it.
    """

    def __init__(self, size: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.start, self.shuffle = size, seed, start, shuffle
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_pass = max(self.size // self.world, 1)
        pass_, pos = self.start // per_pass, self.start // per_pass * per_pass
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_)
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            if self.world > 1:
                order = order[: per_pass * self.world][self.rank :: self.world]
            for i in order.tolist():
                if pos >= self.start:
                    yield i, (self.seed * 7_919 + pos * 104_729 + self.rank) % (2**32)
                pos += 1
            pass_ += 1


class _SeededItems(Dataset):
    """Fetch ``dataset[index]`` with the dataset's random transforms seeded for this draw."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
        return self.dataset[index]


class TwoStreamLoader:
    """Two endless, replayable data streams zipped into two-stream batches.

    Each batch is a labelled batch (``image``, ``label``, ...) plus ``unlabeled_image`` from the unlabelled
    stream; both cycle forever, so the trainer's ``epoch_length`` sets the epoch. The order of the images and
    the random augmentations are a function of ``seed`` and the position in the stream only: the loader's
    ``state_dict`` (the number of batches consumed) is saved with the training checkpoints, and a resumed run
    sees exactly the batches an uninterrupted run would have seen. In distributed runs each rank draws from its
    own share of every pass. Without unlabelled data (MONAI Label provides only labelled pairs) the labelled
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
        unlabeled_key: str = "unlabeled_image",
        fallback: bool = True,
    ) -> None:
        if len(labeled) == 0:
            raise DataError("the labelled stream is empty: the training needs at least one labelled image.")
        self.labeled = labeled
        self.unlabeled = unlabeled if unlabeled is not None and len(unlabeled) > 0 else None
        self.batch_size = int(batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.unlabeled_key = unlabeled_key
        self.fallback = fallback
        self.consumed = 0
        if self.unlabeled is None and fallback:
            logger.warning("no unlabelled data: the labelled images (without labels) are used as the unlabelled stream.")

    def _stream(self, dataset: Dataset, batch_size: int, seed: int) -> Iterator[dict]:
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        sampler = _SeededSampler(len(dataset), seed, self.consumed * batch_size, rank=rank, world=world)
        loader = DataLoader(_SeededItems(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(seed),
                            persistent_workers=False)
        return iter(loader)

    def __iter__(self) -> Iterator[dict]:
        lab = self._stream(self.labeled, self.batch_size, self.seed)
        unl = self._stream(self.unlabeled, self.unlabeled_batch_size, self.seed + 1) if self.unlabeled is not None else None
        for batch in lab:
            out = dict(batch)
            if unl is not None:
                out[self.unlabeled_key] = next(unl)["image"]
            elif self.fallback:
                out[self.unlabeled_key] = torch.as_tensor(batch["image"]).flip(0)
            self.consumed += 1
            yield out

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
