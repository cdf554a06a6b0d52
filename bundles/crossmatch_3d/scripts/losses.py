# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Losses of CrossMatch: squared-denominator soft Dice with an ignore mask and batch-global sums, and CE + Dice.

- LA (2 classes): binary Dice on the foreground probability, ``1 - (2 sum(p t) + 1e-5) / (sum(p^2) + sum(t^2) + 1e-5)``.
- ACDC (4 classes): the mean over ALL classes (background included) of the same expression with smooth ``1e-4``.

Sums run over the whole batch and over the voxels that are not ignored (ignored = teacher confidence < tau).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DiceIgnore", "dice_ignore", "supervised_loss"]


def dice_ignore(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore: torch.Tensor | None = None,
    binary: bool = True,
    smooth: float | None = None,
) -> torch.Tensor:
    """Soft Dice loss with squared denominators over the non-ignored voxels of the batch.

    Args:
        logits: ``(B, C, *spatial)`` network outputs (softmax is applied here, in fp32).
        target: ``(B, *spatial)`` class indices.
        ignore: ``(B, *spatial)`` boolean, True = excluded from all sums; None = nothing ignored.
        binary: foreground-only Dice on class 1 (LA); else the mean over all C classes incl. background (ACDC).
        smooth: the smoothing term (default 1e-5 binary, 1e-4 multi-class, as the reference).

    Returns:
        a scalar loss.
    """
    prob = torch.softmax(logits.float(), dim=1)
    valid = torch.ones_like(target, dtype=prob.dtype) if ignore is None else (~ignore.bool()).to(prob.dtype)
    if binary:
        smooth = 1e-5 if smooth is None else smooth
        p, t = prob[:, 1] * valid, (target == 1).to(prob.dtype) * valid
        return 1.0 - (2.0 * (p * t).sum() + smooth) / ((p * p).sum() + (t * t).sum() + smooth)
    smooth = 1e-4 if smooth is None else smooth
    num_classes = prob.shape[1]
    onehot = F.one_hot(target.long(), num_classes).movedim(-1, 1).to(prob.dtype)
    v = valid.unsqueeze(1)
    p, t = prob * v, onehot * v
    dims = [0] + list(range(2, prob.ndim))
    dice = (2.0 * (p * t).sum(dims) + smooth) / ((p * p).sum(dims) + (t * t).sum(dims) + smooth)
    return 1.0 - dice.mean()


class DiceIgnore(torch.nn.Module):
    """Module form of :func:`dice_ignore` (``binary`` chooses the LA or ACDC variant)."""

    def __init__(self, binary: bool = True, smooth: float | None = None) -> None:
        super().__init__()
        self.binary, self.smooth = binary, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
        return dice_ignore(logits, target, ignore, self.binary, self.smooth)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, binary: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The supervised terms ``(CE, Dice)``; the reference's ``Lx`` is their mean."""
    ce = F.cross_entropy(logits.float(), target.long())
    return ce, dice_ignore(logits, target, None, binary)
