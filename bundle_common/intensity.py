# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Intensity scaling of 2D images to [0, 1] from the range their values show (8-bit, 16-bit, float)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRangePercentiles

__all__ = ["ScaleToUnitd", "scale_to_unit"]


def scale_to_unit(image: torch.Tensor, lower: float = 0.5, upper: float = 99.5) -> torch.Tensor:
    """``image`` scaled to [0, 1] by the range its values show.

    The readers hand every image over as float32, so the source type is inferred from the values:

    - already in [0, 1] (a float image): unchanged;
    - in [0, 255] (8-bit): divided by 255, exactly as a fixed 0-255 range scaling does;
    - in [0, 65535] with a value above 255 (16-bit): divided by 65535 (a fixed 0-255 range would clip it white);
    - anything else (negative or larger floats): the ``lower``-``upper`` percentiles map to 0 and 1, clipped
      (MONAI's ``ScaleIntensityRangePercentiles``).
    """
    x = image.float() if not torch.is_floating_point(image) else image
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return x
    if lo >= 0.0 and hi <= 255.0:
        return x / 255.0
    if lo >= 0.0 and hi <= 65535.0:
        return x / 65535.0
    return ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=True)(x)


class ScaleToUnitd(MapTransform):
    """Dictionary version of :func:`scale_to_unit`, for the images of a 2D pipeline (after loading, before resizing)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = scale_to_unit(d[key])
        return d
