# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Data of the CrossMatch bundle: the multi-stream loader (labelled, unlabelled and CutMix "mix" streams).

Reading and checking volumes, the datalists, the inference lists and the slice dataset (ACDC) are shared with the
other volume bundles in :mod:`scripts.common.volumes`; the replayable streams every bundle shares are in
:mod:`scripts.common.sampling`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from monai.data import Dataset as MonaiDataset
from torch.utils.data import Dataset

from .common.keys import MIX, UNLABELED
from .common.sampling import StreamLoader
from .common.volumes import SliceDataset
from .transforms import STRONG_KEYS

__all__ = ["MIX", "MIX_KEYS", "UNLABELED", "UNLABELED_KEYS", "MultiStreamLoader"]

logger = logging.getLogger(__name__)

_SUFFIXES = tuple(k[len("image"):] for k in STRONG_KEYS)  # ("_s1", "_s2")
UNLABELED_KEYS = (UNLABELED, *(UNLABELED + s for s in _SUFFIXES))
MIX_KEYS = (MIX, *(MIX + s for s in _SUFFIXES))


# ----------------------------------------------------------------------------------------------------------------------
# the multi-stream loader
# ----------------------------------------------------------------------------------------------------------------------


def _unlabeled_view(labeled: Any, transform: Any) -> Dataset | None:
    """The labelled dataset's source items without labels through ``transform``, or None when it has none."""
    if transform is None:
        return None
    if isinstance(labeled, SliceDataset):
        return labeled.without_labels(transform)
    if isinstance(labeled, MonaiDataset) and isinstance(getattr(labeled, "data", None), Sequence) and all(
        isinstance(d, dict) for d in labeled.data
    ):
        items = [{k: v for k, v in d.items() if k != "label"} for d in labeled.data]
        if isinstance(labeled, CacheDataset):
            return CacheDataset(items, transform, cache_num=labeled.set_num, cache_rate=labeled.set_rate,
                                num_workers=labeled.num_workers, progress=False)
        return MonaiDataset(items, transform)
    return None


class MultiStreamLoader(StreamLoader):
    """CrossMatch's three endless, replayable data streams zipped into one batch per iteration.

    Streams: the labelled one (``seed``), the unlabelled one (``seed + 1``) and an independently shuffled "mix" stream
    over the same unlabelled dataset (``seed + 2``, the CutMix partners). Each batch is the labelled batch (``image``,
    ``label`` and whatever else collates) plus ``unlabeled_image``, ``unlabeled_image_s1``, ``unlabeled_image_s2``
    (the unlabelled dataset's ``image``, ``image_s1``, ``image_s2``) and ``mix_image``, ``mix_image_s1``,
    ``mix_image_s2`` (the same keys from the mix stream). A dataset without strong views gets copies of the weak image.

    The order of the items and the random augmentations are a function of the seed and the position in the stream
    only: the loader's ``state_dict`` (the number of batches consumed) is saved with the training checkpoints, and a
    resumed run sees exactly the batches an uninterrupted run would have seen. In distributed runs each rank draws a
    disjoint share of every pass. All streams cycle forever, so the trainer's ``epoch_length`` sets the epoch.

    Without unlabelled data (MONAI Label provides only labelled pairs) and with ``fallback``, the labelled items
    without their labels serve as the unlabelled and mix streams, with a warning: through the unlabelled dataset's
    transform when one was given (``unlabeled.transform`` of an empty dataset) and the labelled dataset exposes its
    items (a MONAI ``Dataset``/``CacheDataset`` or a :class:`~scripts.common.volumes.SliceDataset`), else through the
    labelled transform with the strong views equal to the weak image. Without ``fallback`` the batches carry only the
    labelled keys (the supervised baseline).

    Args:
        labeled: dataset of the labelled stream.
        unlabeled: dataset of the unlabelled and mix streams, or None.
        batch_size: labelled items per batch.
        unlabeled_batch_size: unlabelled (and mix) items per batch (default ``batch_size``).
        num_workers: data loading worker processes per stream.
        seed: the seed of the streams.
        fallback: without unlabelled data, use the labelled items as the unlabelled streams.

    Raises:
        scripts.common.errors.DataError: an empty labelled dataset.
    """

    def __init__(
        self,
        labeled: Dataset,
        unlabeled: Dataset | None = None,
        batch_size: int = 2,
        unlabeled_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        fallback: bool = True,
    ) -> None:
        super().__init__(labeled, unlabeled, batch_size, unlabeled_batch_size, num_workers, seed, fallback)
        self._source: Dataset | None = self.unlabeled
        if self.unlabeled is None and self.fallback:
            view = _unlabeled_view(labeled, getattr(unlabeled, "transform", None))
            if view is not None:
                logger.warning("no unlabelled data: the labelled items (without labels, through the unlabelled "
                               "transform) are used as the unlabelled and mix streams.")
            else:
                logger.warning("no unlabelled data: the labelled images (without labels, strong views = weak image) "
                               "are used as the unlabelled and mix streams.")
            self._source = view if view is not None else labeled
        self._warned_views = False

    def _views(self, batch: dict, keys: Sequence[str]) -> dict:
        weak = batch["image"]
        out = {keys[0]: weak}
        for key, strong in zip(keys[1:], STRONG_KEYS):
            if strong in batch:
                out[key] = batch[strong]
            else:
                if not self._warned_views and self.unlabeled is not None:
                    logger.warning(f"the unlabelled items have no '{strong}': the weak image is used as strong view.")
                    self._warned_views = True
                out[key] = torch.as_tensor(weak).clone()  # a copy: the trainer pastes CutMix boxes into it
        return out

    def __iter__(self) -> Iterator[dict]:
        lab = self.stream(self.labeled, self.batch_size, self.seed)
        unl = mix = None
        if self._source is not None:
            unl = self.stream(self._source, self.unlabeled_batch_size, self.seed + 1)
            mix = self.stream(self._source, self.unlabeled_batch_size, self.seed + 2)
        for batch in lab:
            out = dict(batch)
            if unl is not None:
                out.update(self._views(next(unl), UNLABELED_KEYS))
                out.update(self._views(next(mix), MIX_KEYS))
            self.consumed += 1
            yield out
