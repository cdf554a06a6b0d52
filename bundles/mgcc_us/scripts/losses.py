# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Losses and the consistency ramp of MGCC (ALGORITHMS.md 3.3 and 3.6).

All losses take logits and compute in float32, so they are safe under bf16/fp16 autocast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

__all__ = ["BCEDiceLoss", "MGCCLoss", "SigmoidRamp", "consistency_loss"]


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + (1 - mean_b (2 sum s*y + eps) / (sum s + sum y + eps))`` with ``s = sigmoid``.

    The BCE is the mean over all elements; the Dice ratio is computed per image over all its channels and
    pixels, then averaged over the images (the reference's ``BCEDiceLoss``). The Dice part is MONAI's
    :class:`~monai.losses.DiceLoss` (``sigmoid=True``, ``smooth_nr = smooth_dr = eps``) on the images
    flattened to one channel, which gives exactly this formula.

    Args:
        bce_weight: weight of the BCE term (reference 0.5).
        smooth: ``eps`` of the Dice ratio (reference 1e-5).
    """

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1e-5) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, reduction="mean")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``logits`` ``(B, C, *spatial)``; ``target`` in {0, 1} of the same shape. Returns a scalar."""
        logits = logits.float()
        target = target.float()
        if logits.shape != target.shape:
            raise ValueError(f"logits and target shapes differ: {tuple(logits.shape)} vs {tuple(target.shape)}.")
        bce = F.binary_cross_entropy_with_logits(logits, target)
        b = logits.shape[0]
        dice = self.dice(logits.reshape(b, 1, -1), target.reshape(b, 1, -1))
        return self.bce_weight * bce + dice


def consistency_loss(main: torch.Tensor, aux: Sequence[torch.Tensor]) -> torch.Tensor:
    """``mean_k mean((sigmoid(main) - sigmoid(aux_k))^2)`` over the auxiliary outputs.

    No stop-gradient on either side: gradients flow to the main and to every auxiliary output, as in the
    reference (ALGORITHMS.md 3.6.8).
    """
    if len(aux) == 0:
        raise ValueError("consistency_loss needs at least one auxiliary output.")
    p_main = torch.sigmoid(main.float())
    return torch.stack([F.mse_loss(p_main, torch.sigmoid(a.float())) for a in aux]).mean()


class SigmoidRamp:
    """Consistency weight ``w_max * exp(-5 (1 - e / ramp_epochs)^2)`` with ``e = min(it // epoch_length, ramp_epochs)``.

    ``it`` is the 0-based iteration index. The reference counts "epochs" of a fixed 150 iterations (not the data
    loader's length) and ramps over 200 of them, so the weight reaches ``w_max = 7`` only at iteration 30,000
    (about 4 at the 20,000 iterations of a 50 % label run). ``ramp_epochs = 0`` gives ``w_max`` throughout.

    Args:
        w_max: final weight (reference 7).
        epoch_length: iterations per ramp step (reference 150).
        ramp_epochs: length of the ramp in ramp steps (reference 200).
    """

    def __init__(self, w_max: float = 7.0, epoch_length: int = 150, ramp_epochs: float = 200.0) -> None:
        if epoch_length < 1:
            raise ValueError(f"epoch_length must be positive, got {epoch_length}.")
        if ramp_epochs < 0:
            raise ValueError(f"ramp_epochs must be >= 0, got {ramp_epochs}.")
        self.w_max = float(w_max)
        self.epoch_length = int(epoch_length)
        self.ramp_epochs = float(ramp_epochs)

    def __call__(self, iteration: int) -> float:
        if self.ramp_epochs == 0:
            return self.w_max
        epoch = min(max(int(iteration) // self.epoch_length, 0), self.ramp_epochs)
        phase = 1.0 - epoch / self.ramp_epochs
        return self.w_max * math.exp(-5.0 * phase * phase)


class MGCCLoss(nn.Module):
    """The MGCC objective ``Lsup + w(it) * Lcons`` (ALGORITHMS.md 3.3).

    ``Lsup`` is the mean over the outputs (main and every auxiliary) of :class:`BCEDiceLoss` on the labelled
    images (the first ``num_labelled`` of the batch); the auxiliary decoders are supervised too (3.6.7).
    ``Lcons`` is :func:`consistency_loss` between the main and each auxiliary output on the unlabelled images
    (the reference) or on all images (``consistency_on="all"``).

    Args:
        ramp: consistency weight per iteration; default :class:`SigmoidRamp` with the reference values.
        consistency_on: ``"unlabelled"`` (reference) or ``"all"``.
        bce_weight: BCE weight inside :class:`BCEDiceLoss`.
        smooth: Dice smoothing inside :class:`BCEDiceLoss`.
    """

    def __init__(
        self,
        ramp: SigmoidRamp | None = None,
        consistency_on: str = "unlabelled",
        bce_weight: float = 0.5,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if consistency_on not in ("unlabelled", "all"):
            raise ValueError(f"consistency_on must be 'unlabelled' or 'all', got {consistency_on!r}.")
        self.ramp = ramp if ramp is not None else SigmoidRamp()
        self.consistency_on = consistency_on
        self.sup_loss = BCEDiceLoss(bce_weight, smooth)

    def forward(
        self,
        outputs: Sequence[torch.Tensor],
        labels: torch.Tensor,
        num_labelled: int,
        iteration: int,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss of one training step.

        Args:
            outputs: ``(main, aux1, ..., auxK)`` logits ``(B, C, H, W)`` of the whole batch (labelled first).
            labels: binary labels of the labelled images, ``(num_labelled, C, H, W)``, or of the whole batch
                (only the first ``num_labelled`` are read).
            num_labelled: number of labelled images at the start of the batch.
            iteration: 0-based iteration index, for the consistency weight.

        Returns:
            ``loss`` (to back-propagate), ``sup``, ``cons``, ``cons_weight`` and ``sup_main``, ``sup_aux1``, ...
            as tensors (the parts are attached to the graph; detach them for logging).
        """
        if len(outputs) < 2:
            raise ValueError(f"MGCCLoss needs the main and at least one auxiliary output, got {len(outputs)}.")
        main = outputs[0]
        batch = main.shape[0]
        if not 0 <= num_labelled <= batch or labels.shape[0] < num_labelled:
            raise ValueError(
                f"num_labelled={num_labelled} does not fit a batch of {batch} with {labels.shape[0]} labels."
            )
        zero = main.float().sum() * 0.0  # keeps the graph (and device) when a part of the batch is empty
        parts: dict[str, torch.Tensor] = {}
        sups = []
        for k, out in enumerate(outputs):
            sup = self.sup_loss(out[:num_labelled], labels[:num_labelled]) if num_labelled > 0 else zero
            parts["sup_main" if k == 0 else f"sup_aux{k}"] = sup
            sups.append(sup)
        start = num_labelled if self.consistency_on == "unlabelled" else 0
        if start < batch:
            cons = consistency_loss(main[start:], [a[start:] for a in outputs[1:]])
        else:
            cons = zero
        weight = torch.tensor(self.ramp(iteration), dtype=torch.float32, device=main.device)
        sup_total = torch.stack(sups).mean()
        return {"loss": sup_total + weight * cons, "sup": sup_total, "cons": cons, "cons_weight": weight, **parts}
