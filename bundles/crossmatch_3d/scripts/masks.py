# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""CutMix box masks of CrossMatch in 2D and 3D.

Convention (the CrossMatch reference's): a box mask is ``True`` **inside the box**, i.e. where the strong view of
the independently drawn "mix" image is pasted: ``u_s[box] = m_s[box]`` (see :func:`paste`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["cutmix_boxes", "paste", "sample_box"]


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=generator))


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[lo, hi)``; ``lo`` when the range is empty."""
    return lo if hi <= lo else int(torch.randint(lo, hi, (1,), generator=generator))


def sample_box(
    spatial_size: Sequence[int],
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1.0 / 0.3),
    faithful_axes: bool = False,
    generator: torch.Generator | None = None,
    max_tries: int = 1000,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sample one CutMix box: ``(starts, sides)`` per spatial axis.

    The box size is ``V = U(area) * prod(spatial_size)``; the aspect ratio ``r ~ U(ratio)``.

    - 2D (ACDC reference, ``(H, W)`` slices): ``h = floor(sqrt(V r))`` on axis 0 (rows, y) and
      ``w = floor(sqrt(V / r))`` on axis 1 (columns, x), the reference's ``mask[y:y+h, x:x+w]``; the ratio and the
      top-left corner (uniform in ``[0, size)``) are re-drawn until the box fits, as the reference does.
    - 3D: sides ``w = floor((V / r)^(1/3))`` on x (axis 0), ``h = floor((V r)^(1/3))`` on y (axis 1) and
      ``d = floor(V^(1/3))`` on z (axis 2); starts uniform in ``[0, size - side)`` (re-drawn like 2D if a side
      does not fit).
    - ``faithful_axes=True`` (3D only) reproduces the reference's transposed box ``mask[z:z+d, y:y+h, x:x+w]``: axis 0
      receives the z-range (start in ``[0, size_z - d)``), axis 2 the x-range (start in ``[0, size_x - w)``), clipped
      at the volume's end; the realised box is empty (a side of 0) when that start lies past the end.

    Returns:
        ``(starts, sides)``: the realised box is ``[starts[i], starts[i] + sides[i])`` on every axis, inside the volume.
    """
    dims = [int(s) for s in spatial_size]
    nd = len(dims)
    if nd not in (2, 3):
        raise ValueError(f"CutMix boxes are 2D or 3D, got spatial_size={tuple(dims)}.")
    vol = _uniform(*area, generator) * math.prod(dims)
    for _ in range(max_tries):
        r = _uniform(*ratio, generator)
        if nd == 2:
            sides = [int(math.sqrt(vol * r)), int(math.sqrt(vol / r))]  # (h on rows, w on columns)
        else:
            sides = [int((vol / r) ** (1 / 3)), int((vol * r) ** (1 / 3)), int(vol ** (1 / 3))]
        sides = [max(s, 1) for s in sides]
        if nd == 3 and faithful_axes:
            w, h, d = sides
            z0, y0, x0 = _randint(0, dims[2] - d, generator), _randint(0, dims[1] - h, generator), _randint(0, dims[0] - w, generator)
            # numpy/torch slicing semantics of mask[z0:z0+d, y0:y0+h, x0:x0+w]: clipped at the end of each axis,
            # empty when the start lies past it (x0 may exceed size_z): starts clamped, sides never negative
            raw = (z0, y0, x0)
            starts = tuple(min(a, dim) for a, dim in zip(raw, dims))
            realised = tuple(max(0, min(s, dim - a)) for a, s, dim in zip(raw, (d, h, w), dims))
            return starts, realised
        if nd == 2:
            starts = [_randint(0, dim, generator) for dim in dims]
        else:
            starts = [_randint(0, dim - s, generator) for s, dim in zip(sides, dims)]
        if all(a + s <= dim for a, s, dim in zip(starts, sides, dims)):
            return tuple(starts), tuple(sides)
    sides = [min(s, dim) for s, dim in zip(sides, dims)]
    return tuple(_randint(0, dim - s + 1, generator) for s, dim in zip(sides, dims)), tuple(sides)


def cutmix_boxes(
    batch_size: int,
    spatial_size: Sequence[int],
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1.0 / 0.3),
    faithful_axes: bool = False,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample CutMix box masks ``(B, *spatial_size)``: True inside the box; each sample boxed with probability ``p``.

    See :func:`sample_box` for the box distribution.
    """
    masks = torch.zeros((batch_size, *spatial_size), dtype=torch.bool)
    for b in range(batch_size):
        if float(torch.rand(1, generator=generator)) >= p:
            continue
        starts, sides = sample_box(spatial_size, area, ratio, faithful_axes, generator)
        masks[(b, *tuple(slice(a, a + s) for a, s in zip(starts, sides)))] = True
    return masks.to(device) if device is not None else masks


def paste(base: torch.Tensor, patch: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``base`` with ``patch`` pasted where ``box`` is True.

    Args:
        base: ``(B, C, *spatial)`` images or ``(B, *spatial)`` maps.
        patch: same shape as ``base``.
        box: boolean ``(B, *spatial)``.
    """
    if box.ndim == base.ndim - 1:
        box = box.unsqueeze(1)
    elif box.ndim != base.ndim:
        raise ValueError(f"box of shape {tuple(box.shape)} does not match a batch of shape {tuple(base.shape)}.")
    return torch.where(box, patch, base)
