# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The MGCC trainer: one network pass over the labelled and unlabelled images, supervised and consistency terms.

The batches come from :class:`scripts.common.images2d.TwoStreamLoader` (``image``/``label`` plus
``unlabeled_image``). The machinery (mixed precision, memory format, the update, gradients across processes) is
:class:`scripts.common.engine.StreamTrainer`'s; this module holds the method only (docs/methods.md, section 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .common.engine import StreamTrainer
from .common.keys import UNLABELED
from .losses import MGCCLoss

__all__ = ["MGCCTrainer"]


class MGCCTrainer(StreamTrainer):
    """MGCC (Tang et al. 2023): every decoder supervised on the labelled images, the auxiliary decoders' sigmoid
    probabilities pulled towards the main decoder's on the unlabelled images, with a sigmoid ramp.

    The labelled and unlabelled images go through the network as one batch (as the reference does: its batch
    norms see both). Without an unlabelled stream (the supervised-only baseline) the consistency term is zero and
    only the labelled images are forwarded.

    Args:
        loss: the objective (default :class:`scripts.losses.MGCCLoss` with the reference's ramp).
        unlabeled_key: batch key of the unlabelled images.
        kwargs: :class:`scripts.common.engine.StreamTrainer`'s arguments (``num_classes`` is 2: background and
            the foreground the single logit scores).
    """

    def __init__(self, *args: Any, loss: MGCCLoss | None = None, unlabeled_key: str = UNLABELED, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_classes != 2:
            raise ValueError(f"MGCC segments one foreground class (num_classes 2), got num_classes {self.num_classes}.")
        self.loss = loss if loss is not None else MGCCLoss()
        self.unlabeled_key = unlabeled_key

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        image, label = batch["image"], batch["label"]
        unlabeled = batch.get(self.unlabeled_key)
        n = image.shape[0]
        x = image if unlabeled is None else torch.cat([image, unlabeled], 0)
        with self.autocast():
            outputs: Sequence[torch.Tensor] = self.network(x)
        outputs = [o.float() for o in outputs]
        target = label.unsqueeze(1).float()
        parts = self.loss(outputs, target, n, self.state.iteration - 1)
        logs = {k: v.detach() for k, v in parts.items() if k != "loss"}
        return parts["loss"], logs, outputs[0][:n].detach()

    def describe_loss(self) -> str:
        return "the MGCC loss (supervised + weighted consistency)"
