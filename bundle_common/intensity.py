# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Intensity scaling: 2D images to [0, 1] from the range their values show (8-bit, 16-bit, float); volumes z-scored.

A model sees intensities in the range it was trained on whatever the files hold: a 16-bit PNG is not clipped
white, a CT volume in Hounsfield units is not fed raw to a network trained on z-scored MRI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, ScaleIntensityRangePercentiles

__all__ = ["ScaleToUnitd", "StandardizeIntensityd", "scale_to_unit", "standardize"]


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


def standardize(
    image: torch.Tensor, max_abs_mean: float = 5.0, std_range: tuple[float, float] = (0.25, 5.0)
) -> torch.Tensor:
    """``image`` z-scored over the whole volume (mean 0, standard deviation 1), unless it is on that scale already.

    A volume whose mean is within ``max_abs_mean`` of 0 and whose standard deviation lies in ``std_range`` is
    returned unchanged: z-scored data, and crops of z-scored data such as UA-MT's LA files (crop means 0.5-1.5,
    standard deviations 0.8-1.7), train exactly as the reference trains them. Any other range (raw MRI counts,
    CT in Hounsfield units, [0, 1] volumes) is standardised with MONAI's ``NormalizeIntensity``. A constant
    volume is refused earlier, by the data check.
    """
    x = image.float() if not torch.is_floating_point(image) else image
    mean, std = float(x.mean()), float(x.std())
    if abs(mean) <= max_abs_mean and std_range[0] <= std <= std_range[1]:
        return x
    return NormalizeIntensity()(x)


class StandardizeIntensityd(MapTransform):
    """Dictionary version of :func:`standardize`, for whole volumes (after loading, before cropping)."""

    def __init__(
        self,
        keys: KeysCollection,
        max_abs_mean: float = 5.0,
        std_range: tuple[float, float] = (0.25, 5.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_abs_mean = float(max_abs_mean)
        self.std_range = (float(std_range[0]), float(std_range[1]))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = standardize(d[key], self.max_abs_mean, self.std_range)
        return d
