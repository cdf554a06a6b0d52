# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Batch keys and engine events that the data streams, the trainers and the handlers exchange.

Kept apart from the engines (as MONAI keeps ``CommonKeys`` and ``IterationEvents``), so a handler never imports a
trainer module to learn a key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import EventEnum
else:
    EventEnum, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum", as_type="base"
    )

__all__ = ["FDS_LABELED", "FDS_UNLABELED", "MIX", "STRONG_SUFFIXES", "UNLABELED", "StageEvents"]

UNLABELED = "unlabeled_image"
"""The unlabelled stream's (weak) images."""

MIX = "mix_image"
"""A second unlabelled stream, the source of mixing boxes (CrossMatch)."""

STRONG_SUFFIXES = ("_s1", "_s2")
"""Suffixes of the two strongly augmented views of a stream's images (``image_s1``, ``unlabeled_image_s2``...)."""

FDS_LABELED = "image_fds"
"""The labelled images after the Frequency Domain Switch (Switch)."""

FDS_UNLABELED = "unlabeled_image_fds"
"""The unlabelled images after the Frequency Domain Switch (Switch)."""


class StageEvents(EventEnum):
    """Events of a two-stage schedule (pre-training on labelled data, then self-training)."""

    PRETRAIN_COMPLETED = "pretrain_completed"
    SELFTRAIN_STARTED = "selftrain_started"
