# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The trainer of the local contrastive self-training: supervised iterations, then joint iterations.

One run is one iteration counter (ALGORITHMS.md 4.4): iterations ``1..supervised_iterations`` are step 1 (the
segmentation loss on augmented labelled slices), the rest are step 3 (the segmentation loss plus ``lambda`` times
the local contrastive loss on pairs of labelled and pseudo-labelled slices). Step 2 and the rounds' pseudo-label
refreshes happen between iterations (:class:`scripts.rounds.RoundHandler`). Without pseudo-labels (the supervised
baseline, or a dataset whose pseudo-labels never hold every class) a joint iteration is a supervised one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .common.engine import StreamTrainer
from .data import CONTRAST_LABELED, CONTRAST_UNLABELED
from .losses import JointLoss
from .transforms import RandBrightnessContrast

__all__ = ["PAIRS", "LocalContrastTrainer", "pair_sets"]

logger = logging.getLogger(__name__)

PAIRS = (
    ("L0", "L1", "L2", "L3", "L4", "U0", "U0", "U2", "U2", "U3"),
    ("L0", "U1", "L2", "U3", "U4", "U0", "U1", "U2", "U3", "U4"),
)
"""The reference's "inter" pairing (``local_loss_exp_no = 1``) of 5 labelled (L) and 5 pseudo-labelled (U) slices:
row ``p`` of set 1 is paired with row ``p`` of set 2: the same slice under two intensity augmentations, or two
different slices (labelled-unlabelled and unlabelled-unlabelled pairs)."""


def pair_sets(labeled: torch.Tensor, unlabeled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Set 1 and set 2 of :data:`PAIRS` from ``labeled`` and ``unlabeled`` ``(N, ...)`` tensors.

    With ``N`` other than 5 the pattern repeats by index modulo ``N``.
    """
    def pick(name: str) -> torch.Tensor:
        src = labeled if name[0] == "L" else unlabeled
        return src[int(name[1:]) % src.shape[0]]

    return tuple(torch.stack([pick(n) for n in names]) for names in PAIRS)  # type: ignore[return-value]


class LocalContrastTrainer(StreamTrainer):
    """Steps 1 and 3 of Chaitanya et al. 2023 on the batches of :class:`scripts.data.JointLoader`.

    Args:
        *args: :class:`scripts.common.engine.StreamTrainer` arguments (device, max_epochs, loader, network, ...).
        loss: the :class:`scripts.losses.JointLoss` (its ``seg_loss`` is the supervised step's loss).
        supervised_iterations: the iterations of step 1; later iterations are joint ones.
        intensity: the per-pair intensity augmentation (:class:`scripts.transforms.RandBrightnessContrast`).
        seed: the seed of the anchor draws and the intensity augmentation (per iteration, so a resumed run replays
            them).
        **kwargs: more :class:`StreamTrainer` arguments.
    """

    def __init__(self, *args: Any, loss: JointLoss, supervised_iterations: int, intensity: RandBrightnessContrast,
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss
        self.supervised_iterations = int(supervised_iterations)
        self.intensity = intensity
        self.seed = int(seed)
        self._warned = False

    @property
    def stage(self) -> str:
        """``"supervised"`` (step 1) or ``"joint"`` (step 3) for the current iteration."""
        return "supervised" if self.state.iteration <= self.supervised_iterations else "joint"

    def parse_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        out = super().parse_batch(batch)
        for prefix in (CONTRAST_LABELED, CONTRAST_UNLABELED):
            if f"{prefix}_label" in batch:
                out[f"{prefix}_label"] = self.label_indices(batch[f"{prefix}_label"], out[f"{prefix}_image"].ndim)
        return out

    def output_logs(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def describe_loss(self) -> str:
        return f"the {self.stage} loss"

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        contrast = f"{CONTRAST_UNLABELED}_image" in batch
        if self.stage == "supervised" or not contrast:
            if self.stage == "joint" and not self._warned:
                logger.warning("no pseudo-labelled slice holds every class: the joint iterations use the "
                               "segmentation loss alone until the next round's pseudo-labels")
                self._warned = True
            logits = self.forward(images)
            seg = self.loss_fn.seg_loss(logits.float(), labels)
            return seg, {"loss_seg": seg.detach()}, logits.detach()
        self._warned = False
        it = self.state.iteration
        set1, set2 = pair_sets(batch[f"{CONTRAST_LABELED}_image"], batch[f"{CONTRAST_UNLABELED}_image"])
        lab1, lab2 = pair_sets(batch[f"{CONTRAST_LABELED}_label"], batch[f"{CONTRAST_UNLABELED}_label"])
        self.intensity.set_random_state(self.seed * 1_000_003 + 2 * it)
        x1 = self.intensity(set1)
        self.intensity.set_random_state(self.seed * 1_000_003 + 2 * it + 1)
        x2 = self.intensity(set2)
        n_seg = images.shape[0]
        x = torch.cat([images, x1, x2])
        with self.autocast():
            logits, emb = self._net.forward_train(x, seg_rows=slice(0, n_seg), embed_rows=slice(n_seg, None))
        emb1, emb2 = emb.float().split(set1.shape[0])
        generator = torch.Generator(device=emb.device).manual_seed(self.seed * 7_919 + it)
        parts = self.loss_fn(logits.float(), labels, emb1, emb2, lab1, lab2, generator=generator)
        loss = parts["loss"]
        if not torch.isfinite(parts["loc"]):  # the reference skips such an update; here the segmentation loss alone
            loss = parts["seg"]
        logs = {"loss_seg": parts["seg"].detach(), "loss_loc": parts["loc"].detach()}
        return loss, logs, logits.detach()
