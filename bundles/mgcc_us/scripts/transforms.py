# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Transforms of the MGCC bundle: the reference's input normalisation, reachable for reproducing it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["IMAGENET_GREY_MEAN", "IMAGENET_GREY_STD", "ReferenceNormalized"]

IMAGENET_GREY_MEAN = (0.485 + 0.456 + 0.406) / 3
"""The ImageNet channel means averaged: the reference's three equal grey channels, normalised, averaged to one."""
IMAGENET_GREY_STD = (0.229 + 0.224 + 0.225) / 3


class ReferenceNormalized(MapTransform):
    """The MGCC reference's input scaling: ImageNet normalisation, then a second division by 255 (3.6.1).

    The reference normalises each image with albumentations' ``Normalize`` (ImageNet mean and standard deviation)
    and its dataset then divides by 255 again, so the network sees values of about +-0.01. This project scales
    images to [0, 1] once (``enabled: false``, the default); ``enabled: true`` reproduces the reference on the
    grey [0, 1] image: ``((x - mean) / std) / 255`` with the three channels' statistics averaged.

    Args:
        keys: the image keys.
        enabled: apply the reference's scaling; False returns the data unchanged.
    """

    def __init__(self, keys: KeysCollection, enabled: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            d[key] = (d[key] - IMAGENET_GREY_MEAN) / IMAGENET_GREY_STD / 255.0
        return d
