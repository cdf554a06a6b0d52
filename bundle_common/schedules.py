# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Learning-rate factors for ``torch.optim.lr_scheduler.LambdaLR``, stepped once per iteration."""

from __future__ import annotations

import math

__all__ = ["PolyLR", "TwoStageCosine"]


class PolyLR:
    """Learning-rate factor ``(1 - step / total) ** power`` for ``torch.optim.lr_scheduler.LambdaLR``.

    Stepped once per iteration after the optimizer step, so the rate used at iteration ``i + 1`` is
    ``lr0 (1 - i / total)^0.9``, as the reference sets it after every update. ``total`` is the last iteration
    (paper) or the HEAD code's hard-coded 17,000 horizon.
    """

    def __init__(self, total_iterations: int, power: float = 0.9) -> None:
        if total_iterations <= 0:
            raise ValueError(f"total_iterations must be positive, got {total_iterations}.")
        self.total = int(total_iterations)
        self.power = float(power)

    def __call__(self, step: int) -> float:
        return max(1.0 - min(step, self.total) / self.total, 0.0) ** self.power


class TwoStageCosine:
    """Learning-rate factor of a two-stage schedule: per-iteration cosine annealing to 0 within each stage.

    For ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration: the factor is
    ``0.5 (1 + cos(pi k / P))`` during the first ``pretrain_iterations`` steps and restarts at 1 for the
    self-training stage, ``0.5 (1 + cos(pi j / S))`` with ``j = k - P`` and ``S = total - P`` (the
    published Switch schedule: each stage has its own CosineAnnealingLR, eta_min 0).

    Args:
        pretrain_iterations: length of the first stage (0 for a single stage).
        total_iterations: length of the whole run.
        selftrain_scale: factor on the self-training stage's peak learning rate (1.0, the published restart at
            the base learning rate); a single-stage schedule (no pre-training) ignores it.
    """

    def __init__(self, pretrain_iterations: int, total_iterations: int, selftrain_scale: float = 1.0) -> None:
        if total_iterations <= 0 or not 0 <= pretrain_iterations <= total_iterations:
            raise ValueError(f"need 0 <= pretrain_iterations ({pretrain_iterations}) <= total_iterations ({total_iterations}).")
        if not selftrain_scale > 0:
            raise ValueError(f"selftrain_scale must be positive, got {selftrain_scale}.")
        self.pretrain = int(pretrain_iterations)
        self.total = int(total_iterations)
        self.selftrain_scale = float(selftrain_scale)

    def __call__(self, step: int) -> float:
        if step < self.pretrain:
            k, n, scale = step, self.pretrain, 1.0
        else:
            k, n = step - self.pretrain, max(self.total - self.pretrain, 1)
            scale = self.selftrain_scale if self.pretrain > 0 else 1.0  # a single stage is not a restart
        return scale * 0.5 * (1.0 + math.cos(math.pi * min(k, n) / n))
