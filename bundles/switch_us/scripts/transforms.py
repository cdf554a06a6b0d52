# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Transforms of the Switch bundle: weak/strong views as MONAI dictionary transforms, and the FDS swap.

The weak view (geometric, applied jointly to image and label, labels always nearest-neighbour) and the
strong view (photometric, image only) are composed in the configs from MONAI transforms and the few
custom ones below (``SomeOf(..., num_transforms=(1, k), replace=True)`` reproduces the reference's "k ops
drawn with replacement").
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Resize, SpatialCrop

__all__ = ["RandPosterized", "RandResizedCropd", "RandSolarized", "amplitude_swap"]


def amplitude_swap(
    a: torch.Tensor, b: torch.Tensor, beta: float = 0.0175, keep_real: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the low-frequency amplitude spectrum of paired images (Frequency Domain Switch).

    ``fft2`` over the last two axes, ``fftshift`` over those two axes only, then inside a centred square
    of side ``floor(size * beta)`` per axis image ``a`` takes the amplitude of ``b`` and vice versa, each
    keeping its own phase; the inverse transform keeps the real part, without clipping.

    Args:
        a: ``(..., H, W)`` images.
        b: images of the same shape, paired element-wise with ``a``.
        beta: relative side of the swapped square (0.0175 gives 4 px at 256, frequencies -2..+1).
        keep_real: return the real part (the method); False returns the complex images (for inspection).

    Returns:
        the two swapped images, in the input dtype.
    """
    if a.shape != b.shape:
        raise ValueError(f"amplitude_swap needs paired images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    h, w = a.shape[-2:]
    sh, sw = int(h * beta), int(w * beta)
    if sh == 0 or sw == 0:
        return a.clone(), b.clone()
    dims = (-2, -1)
    fa = torch.fft.fftshift(torch.fft.fft2(a.float(), dim=dims), dim=dims)
    fb = torch.fft.fftshift(torch.fft.fft2(b.float(), dim=dims), dim=dims)
    mask = torch.zeros((h, w), dtype=torch.bool, device=a.device)
    y0, x0 = h // 2 - sh // 2, w // 2 - sw // 2
    mask[y0 : y0 + sh, x0 : x0 + sw] = True
    amp_a, amp_b = fa.abs(), fb.abs()
    new_a = torch.polar(torch.where(mask, amp_b, amp_a), fa.angle())
    new_b = torch.polar(torch.where(mask, amp_a, amp_b), fb.angle())

    def back(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = torch.fft.ifft2(torch.fft.ifftshift(f, dim=dims), dim=dims)
        return out.real.to(like.dtype) if keep_real else out

    return back(new_a, a), back(new_b, b)


class RandResizedCropd(RandomizableTransform, MapTransform):
    """Random square crop of a random area fraction, resized back to ``spatial_size`` (joint for all keys).

    Equivalent to torchvision's RandomResizedCrop with ratio (1, 1) as the Switch reference uses it, but
    with per-key interpolation (``mode``), so labels stay nearest-neighbour.

    Args:
        keys: keys to crop jointly.
        spatial_size: output size.
        scale: range of the crop's area fraction.
        mode: interpolation per key (e.g. ``["area", "nearest"]``).
        prob: probability of applying the crop.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        scale: Sequence[float] = (0.8, 1.0),
        mode: Sequence[str] | str = "bilinear",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        self._frac = 1.0
        self._start = (0.0, 0.0)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._frac = self.R.uniform(*self.scale)
        self._start = (self.R.uniform(), self.R.uniform())

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key, mode in self.key_iterator(d, self.mode):
            h, w = d[key].shape[1:3]
            side = max(1, int(round(np.sqrt(self._frac) * min(h, w))))
            y0 = int(self._start[0] * (h - side + 1))
            x0 = int(self._start[1] * (w - side + 1))
            cropped = SpatialCrop(roi_start=(y0, x0), roi_end=(y0 + side, x0 + side))(d[key])
            d[key] = Resize(self.spatial_size, mode=mode)(cropped)
        return d


class RandPosterized(RandomizableTransform, MapTransform):
    """Reduce a [0, 1] image to ``b`` bits, ``b`` drawn from ``bits`` (PIL posterize on 8-bit levels)."""

    def __init__(self, keys: KeysCollection, bits: Sequence[int] = (4, 7), prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.bits = (int(bits[0]), int(bits[1]))
        self._b = 8

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._b = int(self.R.randint(self.bits[0], self.bits[1] + 1))

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        step = 2 ** (8 - self._b)
        for key in self.key_iterator(d):
            levels = (d[key].clamp(0, 1) * 255).floor()
            d[key] = torch.div(levels, step, rounding_mode="floor") * step / 255.0
        return d


class RandSolarized(RandomizableTransform, MapTransform):
    """Invert the pixels of a [0, 1] image above a threshold drawn from ``threshold``."""

    def __init__(self, keys: KeysCollection, threshold: Sequence[float] = (0.0, 1.0), prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.threshold = (float(threshold[0]), float(threshold[1]))
        self._t = 1.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._t = self.R.uniform(*self.threshold)

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = torch.where(d[key] >= self._t, 1.0 - d[key], d[key])
        return d
