# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Inferers of the CrossMatch bundle, built on MONAI's.

- :class:`PaperSlidingWindowInferer`: the LA test protocol of the paper (112x112x80 windows at stride 18, 18, 4,
  window starts ``min(i * stride, size - patch)``, symmetric zero padding of small volumes, softmax averaged by
  coverage count). It is MONAI's :class:`~monai.inferers.SlidingWindowInferer` with constant blending and per-axis
  overlaps chosen so that ``int(roi * (1 - overlap))`` equals the strides; MONAI's scan gives exactly the reference
  windows (checked against :func:`sliding_window_loop` in the tests).

The slice-wise inferer of the ACDC protocol (``SliceResizeInferer``) and the mixed-precision wrapper every inferer runs
in (``AmpInferer``) are shared with the other bundles in :mod:`scripts.common.inference`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer

__all__ = ["PaperSlidingWindowInferer", "overlap_for_strides", "sliding_window_loop"]


def overlap_for_strides(roi_size: Sequence[int], strides: Sequence[int]) -> list[float]:
    """Per-axis overlaps for MONAI's sliding window such that ``int(roi * (1 - overlap)) == stride`` on every axis.

    The overlap is taken in the middle of the admissible interval, ``1 - (stride + 0.5) / roi``, away from float
    rounding edges.

    Raises:
        ValueError: a stride outside ``[1, roi]``.
    """
    out = []
    for r, s in zip(roi_size, strides):
        if not 1 <= s <= r:
            raise ValueError(f"stride {s} must be in [1, {r}] for a window of {r}.")
        ov = 0.0 if s == r else 1.0 - (s + 0.5) / r
        if int(r * (1 - ov)) != s:
            raise ValueError(f"cannot express stride {s} for roi {r} as a MONAI overlap.")
        out.append(ov)
    return out


class PaperSlidingWindowInferer(SlidingWindowInferer):
    """The paper's LA sliding window as a MONAI :class:`~monai.inferers.SlidingWindowInferer`.

    Args:
        roi_size: window size (112, 112, 80).
        strides: window strides (18, 18, 4).
        sw_batch_size: windows per network call.
        kwargs: other :class:`~monai.inferers.SlidingWindowInferer` arguments (``sw_device``, ``device``...);
            ``overlap`` and ``mode`` are fixed by this class.
    """

    def __init__(self, roi_size: Sequence[int] = (112, 112, 80), strides: Sequence[int] = (18, 18, 4),
                 sw_batch_size: int = 1, **kwargs: Any) -> None:
        kwargs.pop("overlap", None)
        kwargs.pop("mode", None)
        self.strides = tuple(int(s) for s in strides)
        super().__init__(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap_for_strides(roi_size, strides),
                         mode="constant", padding_mode="constant", cval=0.0, **kwargs)


def sliding_window_loop(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: Sequence[int] = (112, 112, 80),
    strides: Sequence[int] = (18, 18, 4),
    num_classes: int = 2,
) -> torch.Tensor:
    """The reference's plain loop (``test_single_case``) on a ``(1, C, X, Y, Z)`` image: averaged ``predictor`` outputs.

    Kept for verification: :class:`PaperSlidingWindowInferer` must give the same result.
    """
    size = list(image.shape[2:])
    pads = [max(p - s, 0) for p, s in zip(patch, size)]
    lo = [p // 2 for p in pads]
    pad_arg: list[int] = []
    for p, low in reversed(list(zip(pads, lo))):
        pad_arg += [low, p - low]
    x = F.pad(image, pad_arg) if any(pads) else image
    big = list(x.shape[2:])
    score = torch.zeros((1, num_classes, *big), dtype=torch.float32, device=image.device)
    count = torch.zeros((1, 1, *big), dtype=torch.float32, device=image.device)
    ranges = [range(math.ceil((b - p) / s) + 1) for b, p, s in zip(big, patch, strides)]
    for idx in itertools.product(*ranges):
        starts = [min(i * s, b - p) for i, s, b, p in zip(idx, strides, big, patch)]
        sl = (slice(None), slice(None), *[slice(a, a + p) for a, p in zip(starts, patch)])
        score[sl] += predictor(x[sl]).float()
        count[sl] += 1
    out = score / count
    crop = (slice(None), slice(None), *[slice(low, low + s) for low, s in zip(lo, size)])
    return out[crop]
