# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Endless, replayable data streams: the order and the augmentations are a function of the seed and the position.

A training run draws its batches from several endless streams (labelled, unlabelled, ...). Each stream's order and
each draw's transform seed depend only on the stream's seed and the draw's position, so a run resumed from a
checkpoint (which saves the number of batches consumed) sees exactly the batches an uninterrupted run would have
seen. In distributed runs each rank draws a disjoint share of every pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from torch.utils.data import Dataset, Sampler

from .errors import DataError

__all__ = ["SCHEMES", "SeededItems", "SeededSampler", "StreamLoader"]

logger = logging.getLogger(__name__)

SCHEMES = ("numpy", "torch")
"""How a stream draws its permutations and transform seeds (see :class:`SeededSampler`)."""


def _draw_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence([int(e) % 2**32 for e in entropy]).generate_state(1)[0])


class SeededSampler(Sampler):
    """Endless, replayable sample order: ``(index, sample_seed)`` pairs from position ``start`` on.

    Each pass over the dataset is a permutation drawn from ``seed`` and the pass number (a rank's disjoint share of
    it in distributed runs; a dataset smaller than the number of ranks is tiled), and every draw gets its own
    transform seed from ``(seed, rank, position)``, so the stream from any position is the same whether or not the
    run was interrupted before it.

    Args:
        size: the dataset's length.
        seed: the stream's seed.
        start: the position to start from (draws already consumed).
        shuffle: a new permutation each pass (else the dataset's order).
        rank, world: this process's rank and the number of processes.
        scheme: ``"numpy"`` (numpy's ``default_rng`` permutations, ``SeedSequence`` transform seeds) or ``"torch"``
            (``torch.randperm`` permutations and a linear transform seed); both are equally random, and a bundle
            keeps the one its published results were drawn with, so a seed reproduces them.
    """

    def __init__(self, size: int, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1,
                 scheme: str = "numpy") -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
        self.size, self.seed, self.start, self.shuffle = int(size), int(seed), int(start), shuffle
        self.rank, self.world, self.scheme = int(rank), int(world), scheme

    def _order(self, pass_: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        if self.scheme == "torch":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_)
            return torch.randperm(self.size, generator=g).numpy()
        return np.random.default_rng([self.seed % 2**32, pass_]).permutation(self.size)

    def _sample_seed(self, pos: int) -> int:
        if self.scheme == "torch":
            return (self.seed * 7_919 + pos * 104_729 + self.rank) % (2**32)
        return _draw_seed(self.seed, self.rank, pos)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_pass = max(self.size // self.world, 1)
        pass_ = self.start // per_pass
        pos = pass_ * per_pass
        while True:
            order = self._order(pass_)
            if self.world > 1:
                order = np.resize(order, per_pass * self.world)[self.rank :: self.world]
            for i in order.tolist():
                if pos >= self.start:
                    yield i, self._sample_seed(pos)
                pos += 1
            pass_ += 1


class SeededItems(Dataset):
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


class StreamLoader:
    """Base of the multi-stream loaders: endless seeded streams zipped into batches, resumable by position.

    Subclasses define ``__iter__`` from :meth:`stream`, counting each batch they yield in ``consumed``; the loader's
    ``state_dict`` (the number of batches consumed) is saved with the training checkpoints.

    Args:
        labeled: dataset of the labelled stream.
        unlabeled: dataset of the unlabelled stream, or None (an empty one counts as None).
        batch_size: labelled items per batch.
        unlabeled_batch_size: unlabelled items per batch (default ``batch_size``).
        num_workers: data loading worker processes per stream.
        seed: the seed of the streams (stream ``k`` uses ``seed + k``).
        fallback: without unlabelled data, use the labelled items as the unlabelled stream.
        scheme: the streams' :class:`SeededSampler` scheme.

    Raises:
        DataError: an empty labelled dataset.
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
        scheme: str = "numpy",
    ) -> None:
        if labeled is None or len(labeled) == 0:
            raise DataError("the labelled stream is empty: the training needs at least one labelled item.")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
        self.labeled = labeled
        self.unlabeled = unlabeled if unlabeled is not None and len(unlabeled) > 0 else None
        self.batch_size = int(batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.fallback = bool(fallback)
        self.scheme = scheme
        self.consumed = 0

    def stream(self, dataset: Dataset, batch_size: int, seed: int) -> Iterator[dict]:
        """An endless iterator of batches of ``dataset``, starting after the batches already consumed."""
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        sampler = SeededSampler(len(dataset), seed, self.consumed * batch_size, rank=rank, world=world,
                                scheme=self.scheme)
        loader = DataLoader(SeededItems(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                            num_workers=self.num_workers, generator=torch.Generator().manual_seed(seed),
                            persistent_workers=False)
        return iter(loader)

    def __iter__(self) -> Iterator[dict]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
