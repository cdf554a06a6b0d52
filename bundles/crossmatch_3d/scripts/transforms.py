# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""MONAI dictionary transforms and pipelines of CrossMatch (LA 3D and ACDC 2D).

Weak views are geometric and applied jointly to image and label (labels always nearest); strong views are
photometric, on the images only, and are written to ``image_s1`` / ``image_s2`` next to the weak ``image``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    Identityd,
    LoadImaged,
    MapTransform,
    OneOf,
    RandBiasFieldd,
    RandGaussianSmoothd,
    Randomizable,
    RandRotated,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
)

__all__ = [
    "RandBrightnessContrastd",
    "RandRotFlipd",
    "RandSignedGammad",
    "STRONG_KEYS",
    "acdc_train_transforms",
    "acdc_unlabeled_transforms",
    "la_train_transforms",
    "la_unlabeled_transforms",
    "load_transforms",
]

STRONG_KEYS = ("image_s1", "image_s2")


class RandRotFlipd(Randomizable, MapTransform):
    """The reference's RandomRotFlip: ``rot90`` by ``k ~ {0..3}`` in the first two spatial axes, then a flip along
    spatial axis 0 or 1, the same for every key (channel-first arrays).

    Args:
        keys: keys to transform jointly (image and label).
        prob: probability of applying the transform (1.0 for LA; 0.5 for the ACDC geometric branch).
        allow_missing_keys: don't raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.prob = prob
        self._do, self._k, self._axis = True, 0, 0

    def randomize(self, data: object = None) -> None:
        self._do = self.R.rand() < self.prob
        self._k = int(self.R.randint(0, 4))
        self._axis = int(self.R.randint(0, 2))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            x = d[key]
            x = torch.rot90(torch.as_tensor(x), self._k, dims=(1, 2))
            d[key] = torch.flip(x, dims=(1 + self._axis,)).contiguous()
        return d


class RandBrightnessContrastd(Randomizable, MapTransform):
    """ColorJitter-like brightness and contrast on grey images in [0, 1] (hue/saturation are no-ops on grey).

    Brightness multiplies by ``b ~ U(1 - brightness, 1 + brightness)``; contrast blends with the image mean by
    ``c ~ U(1 - contrast, 1 + contrast)``; the result is clipped to [0, 1] (torchvision's order and clipping).

    Args:
        keys: image keys (each gets its own draw).
        prob: probability of applying it (0.8).
        brightness: brightness jitter (0.5).
        contrast: contrast jitter (0.5).
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.8, brightness: float = 0.5, contrast: float = 0.5,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.prob, self.brightness, self.contrast = prob, brightness, contrast

    def randomize(self, data: object = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.R.rand() >= self.prob:
                continue
            x = torch.as_tensor(d[key]).float()
            b = self.R.uniform(1 - self.brightness, 1 + self.brightness)
            c = self.R.uniform(1 - self.contrast, 1 + self.contrast)
            order = self.R.permutation(2)
            for op in order:
                if op == 0:
                    x = (x * b).clamp(0, 1)
                else:
                    x = ((x - x.mean()) * c + x.mean()).clamp(0, 1)
            d[key] = x
        return d


class RandSignedGammad(Randomizable, MapTransform):
    """torchio's ``RandomGamma``: ``x -> sign(x) |x|^gamma`` with ``log(gamma) ~ U(-log_gamma, log_gamma)``.

    The power is sign preserving, so it applies to z-scored images without a rescaling (MONAI's
    ``RandAdjustContrast`` rescales to [0, 1] first and draws ``gamma`` itself uniformly, a different transform).

    Args:
        keys: image keys (one draw per call, shared by the keys).
        log_gamma: half-width of the uniform range of ``log(gamma)`` (0.5 in the CrossMatch reference).
        prob: probability of applying the transform.
        allow_missing_keys: don't raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, log_gamma: float = 0.5, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.log_gamma, self.prob = float(log_gamma), float(prob)
        self._do, self.gamma = True, 1.0

    def randomize(self, data: object = None) -> None:
        self._do = self.R.rand() < self.prob
        self.gamma = float(np.exp(self.R.uniform(-self.log_gamma, self.log_gamma)))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            d[key] = torch.sign(x) * x.abs() ** self.gamma
        return d


def load_transforms(keys: Sequence[str] = ("image", "label"), allow_missing_keys: bool = False) -> list:
    """Load (NIfTI/NRRD/MHA via MONAI's readers) and make channel-first; float32 images."""
    ops = [
        LoadImaged(keys=list(keys), image_only=True, allow_missing_keys=allow_missing_keys),
        EnsureChannelFirstd(keys=list(keys), channel_dim="no_channel", allow_missing_keys=allow_missing_keys),
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
    ]
    others = [k for k in keys if k != "image"]
    if others:
        ops.append(EnsureTyped(keys=others, dtype=torch.uint8, track_meta=False, allow_missing_keys=True))
    return ops


def _optional(transform: Callable | None) -> list:
    """``[transform]``, or nothing when it is ``None``."""
    return [] if transform is None else [transform]


def _la_geometric(keys: Sequence[str], roi_size: Sequence[int]) -> list:
    return [
        RandRotFlipd(keys=list(keys)),
        SpatialPadd(keys=list(keys), spatial_size=list(roi_size), mode="constant"),
        RandSpatialCropd(keys=list(keys), roi_size=list(roi_size), random_size=False),
    ]


def _la_strong(key: str, bias_coeff: float = 0.5, log_gamma: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0)) -> list:
    """torchio-like strong view: p 0.8 (bias field, then gamma); p 0.5 Gaussian blur."""
    bias_gamma = Compose([
        RandBiasFieldd(keys=key, degree=3, coeff_range=(-bias_coeff, bias_coeff), prob=1.0),
        RandSignedGammad(keys=key, log_gamma=log_gamma, prob=1.0),
    ])
    return [
        OneOf([bias_gamma, Identityd(keys=key)], weights=[0.8, 0.2]),
        RandGaussianSmoothd(keys=key, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=0.5),
    ]


def la_train_transforms(roi_size: Sequence[int] = (112, 112, 80), intensity: Callable | None = None) -> Compose:
    """Labelled LA stream: load, ``intensity`` (whole volume), RandomRotFlip, pad + random crop to ``roi_size``."""
    keys = ("image", "label")
    return Compose(load_transforms(keys) + _optional(intensity) + _la_geometric(keys, roi_size))


def la_unlabeled_transforms(roi_size: Sequence[int] = (112, 112, 80), intensity: Callable | None = None) -> Compose:
    """Unlabelled LA stream: the weak view ``image`` plus two independent strong views ``image_s1``/``image_s2``."""
    ops = load_transforms(("image",)) + _optional(intensity) + _la_geometric(("image",), roi_size)
    ops.append(CopyItemsd(keys="image", times=2, names=list(STRONG_KEYS)))
    for key in STRONG_KEYS:
        ops += _la_strong(key)
    return Compose(ops)


def _acdc_geometric(keys: Sequence[str], size: Sequence[int], image_mode: str) -> list:
    modes = [image_mode if k == "image" else "nearest" for k in keys]
    rot = RandRotated(keys=list(keys), range_x=float(np.deg2rad(20)), prob=1.0, mode="nearest", padding_mode="zeros",
                      keep_size=True)
    return [
        OneOf([RandRotFlipd(keys=list(keys)), rot, Identityd(keys=list(keys))], weights=[0.5, 0.25, 0.25]),
        Resized(keys=list(keys), spatial_size=list(size), mode=modes),
    ]


def acdc_train_transforms(size: Sequence[int] = (256, 256), image_mode: str = "bilinear") -> Compose:
    """Labelled ACDC slices (channel-first 2D, see :class:`scripts.common.volumes.SliceDataset`): geometric + resize.

    ``image_mode="nearest"`` reproduces the reference's order-0 zoom of the image.
    """
    keys = ("image", "label")
    return Compose(_acdc_geometric(keys, size, image_mode))


def acdc_unlabeled_transforms(size: Sequence[int] = (256, 256), image_mode: str = "bilinear") -> Compose:
    """Unlabelled ACDC slices: geometric + resize, then two strong views (p 0.8 brightness/contrast, p 0.5 blur)."""
    ops = _acdc_geometric(("image",), size, image_mode)
    ops.append(CopyItemsd(keys="image", times=2, names=list(STRONG_KEYS)))
    for key in STRONG_KEYS:
        ops += [
            RandBrightnessContrastd(keys=key, prob=0.8),
            RandGaussianSmoothd(keys=key, sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), prob=0.5),
        ]
    return Compose(ops)
