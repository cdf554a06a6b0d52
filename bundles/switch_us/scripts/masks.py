# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Box-mask mixing: one utility with the Multiscale Switch (MSS), BCP and CutMix policies.

Every mask follows one convention: ``True`` (or 1) marks the **base** image, ``False`` (0) the pasted
**patch**. Mixing is ``a * M + b * (1 - M)`` and the same mask is the loss mask of the base region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["bcp_mask", "cutmix_masks", "mix", "multiscale_mask", "paste_boxes"]


def paste_boxes(
    mask: torch.Tensor, sizes: Sequence[int], count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Clear ``count`` squares of side ``s`` (each of ``sizes``) in a 2D boolean ``mask``, in place.

    Each top-left corner is uniform in ``[0, dim - s)`` per axis, as in the Switch reference. Squares may
    overlap.
    """
    h, w = mask.shape[-2:]
    for s in sizes:
        if s > min(h, w):
            raise ValueError(f"box side {s} exceeds the image size {(h, w)}.")
        for _ in range(count):
            y = int(torch.randint(0, max(h - s, 1), (1,), generator=generator))
            x = int(torch.randint(0, max(w - s, 1), (1,), generator=generator))
            mask[..., y : y + s, x : x + s] = False
    return mask


def multiscale_mask(
    spatial_size: Sequence[int],
    coarse_size: int = 128,
    fine_size: int = 32,
    n_coarse: int = 2,
    n_fine: int = 2,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The MSS mask: ``n_coarse`` coarse and then ``n_fine`` fine patch squares; True = base image.

    The published setting is 256x256 images, two 128x128 and two 32x32 squares. For other image sizes the
    square sides are taken as given (scale them in the config with the image size).

    Returns:
        a boolean tensor of shape ``spatial_size`` shared by the whole batch.
    """
    mask = torch.ones(tuple(spatial_size), dtype=torch.bool)
    paste_boxes(mask, [coarse_size], n_coarse, generator)
    paste_boxes(mask, [fine_size], n_fine, generator)
    return mask.to(device) if device is not None else mask


def bcp_mask(
    spatial_size: Sequence[int],
    ratio: float = 2.0 / 3.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The BCP mask: one patch box of side ``floor(ratio * size)`` per axis; True = base image."""
    mask = torch.ones(tuple(spatial_size), dtype=torch.bool)
    sides = [int(s * ratio) for s in spatial_size]
    starts = [int(torch.randint(0, s - b, (1,), generator=generator)) for s, b in zip(spatial_size, sides)]
    mask[tuple(slice(a, a + b) for a, b in zip(starts, sides))] = False
    return mask.to(device) if device is not None else mask


def cutmix_masks(
    batch_size: int,
    spatial_size: Sequence[int],
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1.0 / 0.3),
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample CutMix masks in 2D or 3D; True = base image, each sample boxed with probability ``p``.

    The box volume is ``U(area) * prod(spatial_size)`` and its aspect ratio ``r ~ U(ratio)``. In 2D the
    sides are ``(sqrt(V r), sqrt(V / r))`` (first, second axis); in 3D ``((V r)^(1/3), (V / r)^(1/3),
    V^(1/3))`` on the (x, y, z) axes in that order, clipped to the volume, so a box always lies inside it.
    """
    nd = len(spatial_size)
    if nd not in (2, 3):
        raise ValueError(f"CutMix supports 2D or 3D, got spatial_size={tuple(spatial_size)}.")
    masks = torch.ones((batch_size, *spatial_size), dtype=torch.bool)
    total = float(torch.tensor(spatial_size).prod())
    for b in range(batch_size):
        if float(torch.rand(1, generator=generator)) >= p:
            continue
        vol = float(torch.empty(1).uniform_(*area, generator=generator)) * total
        r = float(torch.empty(1).uniform_(*ratio, generator=generator))
        if nd == 2:
            sides = [(vol * r) ** 0.5, (vol / r) ** 0.5]
        else:
            sides = [(vol * r) ** (1 / 3), (vol / r) ** (1 / 3), vol ** (1 / 3)]
        sides = [max(1, min(int(s), dim)) for s, dim in zip(sides, spatial_size)]
        starts = [int(torch.randint(0, dim - s + 1, (1,), generator=generator)) for s, dim in zip(sides, spatial_size)]
        masks[(b, *tuple(slice(a, a + s) for a, s in zip(starts, sides)))] = False
    return masks.to(device) if device is not None else masks


def mix(base: torch.Tensor, patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``base * M + patch * (1 - M)``.

    Args:
        base: ``(B, C, *spatial)`` images or ``(B, *spatial)`` label maps.
        patch: same shape as ``base``.
        mask: boolean ``(B, *spatial)``, True = base (expand a shared mask with ``mask.expand(B, *spatial)``).
    """
    if mask.ndim == base.ndim - 1:
        mask = mask.unsqueeze(1)
    elif mask.ndim != base.ndim:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match a batch of shape {tuple(base.shape)}.")
    return torch.where(mask, base, patch)
