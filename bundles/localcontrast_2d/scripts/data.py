# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The data streams of the local contrastive self-training (ALGORITHMS.md 4.4).

Training reads slices of preprocessed volumes (:class:`scripts.common.volumes.SliceDataset` with the paper's
preprocessing, :func:`scripts.transforms.preprocess_transforms`). One iteration draws:

* the **segmentation batch**: ``batch_size`` labelled slices (reference 20) holding at least ``min_classes``
  distinct labels, augmented (affine, then deformation);
* in the joint step, the **contrastive sets**: ``contrast_size`` (reference 5) labelled slices and as many
  pseudo-labelled slices whose labels hold every class, not augmented geometrically (the intensity augmentation is
  applied per pair by the trainer).

The reference draws 300 random slices and keeps the first ones that qualify; drawing uniformly from the slices
that qualify is the same distribution without the 300-slice cap. The unlabelled (pseudo-labelled) dataset changes
after every round (:class:`scripts.rounds.RoundHandler` calls :meth:`JointLoader.set_unlabeled`); every stream is a
replayable :class:`scripts.common.sampling.StreamLoader` stream, so a resumed run draws the batches an
uninterrupted one would have drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset

from .common.sampling import StreamLoader

__all__ = ["CONTRAST_LABELED", "CONTRAST_UNLABELED", "JointLoader"]

logger = logging.getLogger(__name__)

CONTRAST_LABELED = "contrast_labeled"
"""Batch key prefix of the labelled contrastive set: ``contrast_labeled_image`` and ``contrast_labeled_label``."""

CONTRAST_UNLABELED = "contrast_unlabeled"
"""Batch key prefix of the pseudo-labelled contrastive set."""


class JointLoader(StreamLoader):
    """The segmentation stream plus, once pseudo-labels exist, the two contrastive streams, zipped per iteration.

    Each batch holds ``image``/``label`` (the augmented segmentation batch) and, when ``contrast_labeled`` is set
    and the unlabelled dataset is, ``contrast_labeled_image``/``_label`` and ``contrast_unlabeled_image``/``_label``.

    Args:
        labeled: the augmented labelled slices of the segmentation batch.
        contrast_labeled: the labelled slices that hold every class, without geometric augmentation (or None).
        batch_size: segmentation slices per iteration (reference 20).
        contrast_size: slices per contrastive set (reference 5).
        num_workers: data loading worker processes per stream.
        seed: the seed of the streams (segmentation ``seed``, labelled contrastive ``seed + 1``, pseudo-labelled
            ``seed + 2``).
    """

    def __init__(
        self,
        labeled: Dataset,
        contrast_labeled: Dataset | None = None,
        batch_size: int = 20,
        contrast_size: int = 5,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(labeled, None, batch_size, contrast_size, num_workers, seed, fallback=False, scheme="torch")
        self.contrast_labeled = contrast_labeled if contrast_labeled is not None and len(contrast_labeled) else None
        self.contrast_size = int(contrast_size)
        self._version = 0

    def set_unlabeled(self, dataset: Dataset | None) -> None:
        """Use ``dataset`` (the pseudo-labelled slices that hold every class) from the next batch on."""
        self.unlabeled = dataset if dataset is not None and len(dataset) > 0 else None
        self._version += 1

    def _contrast_streams(self) -> tuple[Iterator[dict], Iterator[dict]] | None:
        if self.contrast_labeled is None or self.unlabeled is None:
            return None
        return (self.stream(self.contrast_labeled, self.contrast_size, self.seed + 1),
                self.stream(self.unlabeled, self.contrast_size, self.seed + 2))

    def __iter__(self) -> Iterator[dict]:
        seg = self.stream(self.labeled, self.batch_size, self.seed)
        version, contrast = self._version, self._contrast_streams()
        for batch in seg:
            if version != self._version:  # a new round's pseudo-labels: restart the streams at this position
                version, contrast = self._version, self._contrast_streams()
            out = dict(batch)
            if contrast is not None:
                for prefix, stream in zip((CONTRAST_LABELED, CONTRAST_UNLABELED), contrast):
                    part = next(stream)
                    out[f"{prefix}_image"] = torch.as_tensor(part["image"])
                    out[f"{prefix}_label"] = torch.as_tensor(part["label"])
            self.consumed += 1
            yield out
