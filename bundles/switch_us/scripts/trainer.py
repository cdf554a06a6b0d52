# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Trainers of the Switch bundle: Switch (MSS + FDS + contrastive + consistency), BCP and supervised.

Each is a :class:`monai.engines.Trainer` whose ``_iteration`` runs one method step on a two-stream batch
(``image``/``label`` from the labelled stream, ``unlabeled_image`` from the unlabelled stream, see
:class:`scripts.common.images2d.TwoStreamLoader`). Semi-supervised trainers run two stages in one engine: a
pre-training stage of ``pretrain_iterations`` on labelled data, then self-training with the EMA teacher.
Between them the trainer fires :attr:`StageEvents.PRETRAIN_COMPLETED` (the best pre-training weights are
restored by :class:`scripts.handlers.ModelCheckpoint`) and :attr:`StageEvents.SELFTRAIN_STARTED` (the
teacher is initialised by :class:`scripts.handlers.EMATeacher`).

Mixed precision is device aware (bf16 autocast on CPUs with native bf16, bf16/fp16 on CUDA; fp16, on CUDA or
asked for with ``amp_dtype``, trains with a grad scaler) and the network and inputs can use the channels-last
memory format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.utils.enums import CommonKeys as Keys
from scipy import ndimage

from .common.engine import StreamTrainer
from .common.keys import FDS_LABELED, FDS_UNLABELED, UNLABELED, StageEvents
from .common.runtime import amp_context
from .losses import logit_consistency, masked_dice_ce, mixed_dice_ce, pixel_info_nce
from .masks import bcp_mask, mix, multiscale_mask

__all__ = [
    "BCPTrainer",
    "SemiSupervisedTrainer",
    "SupervisedBaselineTrainer",
    "SwitchTrainer",
    "largest_component",
]


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep the largest 8-connected foreground component of each 2D mask in a ``(B, H, W)`` batch.

    An empty mask stays empty.
    """
    out = np.zeros(mask.shape, dtype=bool)
    structure = np.ones((3, 3), dtype=bool)
    arr = mask.detach().cpu().numpy().astype(bool)
    for i, m in enumerate(arr):
        lab, n = ndimage.label(m, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        out[i] = lab == int(sizes.argmax())
    return torch.from_numpy(out).to(mask.device)


class SemiSupervisedTrainer(StreamTrainer):
    """Two stages in one engine: pre-training on labelled data, then self-training with the EMA teacher.

    Subclasses implement :meth:`pretrain_step` and :meth:`selftrain_step`, each returning ``(loss, logs, preds)``;
    the rest (AMP, memory format, batch parsing, the update, distributed gradients) is
    :class:`scripts.common.engine.StreamTrainer`'s.

    Args:
        pretrain_iterations: length of the pre-training stage (0: no pre-training stage).
        teacher: the :class:`scripts.handlers.EMATeacher` (for semi-supervised trainers).
        args, kwargs: see :class:`scripts.common.engine.StreamTrainer` (``train_data_loader`` yields two-stream
            batches: ``image``, ``label``, ``unlabeled_image``).
    """

    def __init__(self, *args: Any, pretrain_iterations: int = 0, teacher: Any | None = None,
                 event_names: list | None = None, **kwargs: Any) -> None:
        super().__init__(*args, event_names=[*(event_names or []), StageEvents], **kwargs)
        self.teacher = teacher
        self.pretrain_iterations = int(pretrain_iterations)

    @property
    def stage(self) -> str:
        """``"pretrain"`` during the first ``pretrain_iterations`` iterations, then ``"selftrain"``."""
        return "pretrain" if self.state.iteration <= self.pretrain_iterations else "selftrain"

    def iteration_started(self) -> None:
        """Fire the stage events at the first self-training iteration."""
        if self.pretrain_iterations > 0 and self.state.iteration == self.pretrain_iterations + 1:
            self.fire_event(StageEvents.PRETRAIN_COMPLETED)
        if self.state.iteration == self.pretrain_iterations + 1:
            self.fire_event(StageEvents.SELFTRAIN_STARTED)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        return self.pretrain_step(batch) if self.stage == "pretrain" else self.selftrain_step(batch)

    def output_logs(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def describe_loss(self) -> str:
        return f"the {self.stage} loss"

    def pretrain_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        raise NotImplementedError

    def selftrain_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        raise NotImplementedError

    def supervised_step(self, batch: dict[str, torch.Tensor], softmax: bool = True) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """``(CE + Dice) / 2`` on the labelled images as they are: the supervised-only baseline's step."""
        logits = self.forward(batch[Keys.IMAGE])
        dice, ce = masked_dice_ce(logits, batch[Keys.LABEL], softmax=softmax)
        return (dice + ce) / 2, {"loss_dice": dice, "loss_ce": ce}, logits.detach()

    def pseudo_label(self, images: torch.Tensor, threshold: float = 0.5, keep_largest: bool = True) -> torch.Tensor:
        """Teacher pseudo-labels: foreground probability >= ``threshold`` (binary) or argmax, then LCC."""
        if self.teacher is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a teacher (scripts.handlers.EMATeacher) for self-training."
            )
        with torch.no_grad(), amp_context(self.state.device, self.amp_dtype):
            prob = torch.softmax(self.teacher.predict(images).float(), dim=1)
        if self.num_classes == 2:
            fg = prob[:, 1] >= threshold
            return (largest_component(fg) if keep_largest else fg).long()
        return prob.argmax(1)


class SupervisedBaselineTrainer(SemiSupervisedTrainer):
    """The supervised-only baseline: ``(CE + Dice) / 2`` on the labelled stream (Dice on softmax).

    Args:
        dice_on_logits: compute the Dice on the raw logits instead of the softmax probabilities, as the
            reference's ``train_single.py`` does (docs/methods.md 3.3); only for reproducing that baseline.
        args, kwargs: see :class:`SemiSupervisedTrainer`.
    """

    def __init__(self, *args, dice_on_logits: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dice_on_logits = bool(dice_on_logits)

    def pretrain_step(self, batch):
        return self.selftrain_step(batch)

    def selftrain_step(self, batch):
        return self.supervised_step(batch, softmax=not self.dice_on_logits)


class _MixTrainer(SemiSupervisedTrainer):
    """Shared pre-training of BCP and Switch: mix the two labelled halves and score both regions.

    Args:
        pretrain_patch_weight: weight of the labelled patch region in pre-training (1.0; the Switch code's 0.5).
        pretrain_mix: pre-train on mixed labelled pairs, as both methods publish (True); False pre-trains on the
            labelled images as they are, with the supervised-only baseline's loss, so self-training starts from the
            baseline's weights (an ablation: docs/results/semi_supervised_gain.md).
        pseudo_label_weight: weight of a pseudo-labelled region in self-training (0.5).
        pseudo_threshold: foreground probability of a teacher pseudo-label (0.5).
        per_view_forward: run the teacher on each unlabelled half and the student on each mixed view as separate
            forwards, as the reference code does, so that train-mode batch norm normalises each view with its own
            batch statistics (4 images each at the published size). False (default): one batched forward for the
            teacher and one for the student (the same maths with running statistics; faster).
        args, kwargs: see :class:`SemiSupervisedTrainer`.
    """

    def __init__(
        self,
        *args,
        pretrain_patch_weight: float = 1.0,
        pretrain_mix: bool = True,
        pseudo_label_weight: float = 0.5,
        pseudo_threshold: float = 0.5,
        per_view_forward: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pretrain_patch_weight = float(pretrain_patch_weight)
        self.pretrain_mix = bool(pretrain_mix)
        self.pseudo_label_weight = float(pseudo_label_weight)
        self.pseudo_threshold = float(pseudo_threshold)
        self.per_view_forward = bool(per_view_forward)

    def views_forward(self, views: Sequence[torch.Tensor], project: bool = False):
        """Student logits (and projector embeddings when ``project``) of ``views``, concatenated in their order.

        One batched forward, or one forward per view with ``per_view_forward``.
        """
        net = getattr(self.network, "module", self.network)
        groups = [torch.cat(list(views))] if not self.per_view_forward else list(views)
        logits, emb = [], []
        with amp_context(self.state.device, self.amp_dtype):
            for x in groups:
                out = self.network(x)
                logits.append(out)
                if project:
                    emb.append(net.project(out))
        if not project:
            return torch.cat(logits)
        return torch.cat(logits), torch.cat(emb)

    def make_mask(self, batch_size: int, spatial: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0] // 2
        if n == 0:
            raise ValueError(f"mixing needs at least 2 images per stream, got a batch of {x.shape[0]}.")
        return x[:n], x[n : 2 * n]

    def pretrain_step(self, batch):
        if not self.pretrain_mix:
            return self.supervised_step(batch)
        (li, lj), (yi, yj) = self.halves(batch[Keys.IMAGE]), self.halves(batch[Keys.LABEL])
        m = self.make_mask(li.shape[0], li.shape[2:])
        logits = self.forward(mix(li, lj, m))
        dice, ce = mixed_dice_ce(logits, yi, yj, m, 1.0, self.pretrain_patch_weight)
        return (dice + ce) / 2, {"loss_dice": dice, "loss_ce": ce}, logits.detach()

    def bidirectional_mix(self, batch):
        """The two mixes of self-training: (unlabelled base, labelled patch) and (labelled base, unlabelled patch)."""
        (li, lj), (yi, yj) = self.halves(batch[Keys.IMAGE]), self.halves(batch[Keys.LABEL])
        if UNLABELED not in batch:
            raise KeyError(f"self-training needs the unlabelled stream ('{UNLABELED}' in the batch).")
        up, uq = self.halves(batch[UNLABELED])
        if self.per_view_forward:  # the reference's two teacher calls: batch statistics per unlabelled half
            pp, pq = self.pseudo_label(up, self.pseudo_threshold), self.pseudo_label(uq, self.pseudo_threshold)
        else:
            pp = self.pseudo_label(torch.cat([up, uq]), self.pseudo_threshold)
            pp, pq = pp[: up.shape[0]], pp[up.shape[0] :]
        m = self.make_mask(li.shape[0], li.shape[2:])
        x_ul, x_lu = mix(up, li, m), mix(lj, uq, m)
        targets = ((pp, yi), (yj, pq))
        return m, (x_ul, x_lu), targets, (li, lj, up, uq)


class BCPTrainer(_MixTrainer):
    """Bidirectional Copy-Paste (the BCP baseline of the Switch repository, docs/methods.md 2.1)."""

    def __init__(self, *args, box_ratio: float = 2.0 / 3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.box_ratio = float(box_ratio)

    def make_mask(self, batch_size, spatial):
        return bcp_mask(spatial, self.box_ratio, device=self.state.device).expand(batch_size, *spatial)

    def selftrain_step(self, batch):
        m, (x_ul, x_lu), ((pp, yi), (yj, pq)), _ = self.bidirectional_mix(batch)
        logits = self.views_forward([x_ul, x_lu])
        o_ul, o_lu = logits.split(x_ul.shape[0])
        w = self.pseudo_label_weight
        d1, c1 = mixed_dice_ce(o_ul, pp, yi, m, w, 1.0)
        d2, c2 = mixed_dice_ce(o_lu, yj, pq, m, 1.0, w)
        loss = (d1 + d2 + c1 + c2) / 2
        return loss, {"loss_dice": d1 + d2, "loss_ce": c1 + c2}, o_lu.detach()


class SwitchTrainer(_MixTrainer):
    """Switch: Multiscale Switch mixing + Frequency Domain Switch + pixel contrastive + consistency.

    Self-training needs the FDS-swapped images ``image_fds`` / ``unlabeled_image_fds`` in the batch, which
    :class:`scripts.handlers.FrequencyDomainSwitch` adds, and a teacher. The four student forwards of the
    reference (two mixes, and the same two mixes of the FDS images) run as ONE batched forward (four forwards, as the
    reference, with ``per_view_forward``).

    Args:
        coarse_size, fine_size, n_coarse, n_fine: the MSS mask (128/32 px squares, 2 + 2).
        contrastive_weight: weight of the pixel InfoNCE term (0.1).
        consistency_weight: weight of the logit consistency term (0.1).
        temperature: InfoNCE temperature (0.07).
    """

    def __init__(
        self,
        *args,
        coarse_size: int = 128,
        fine_size: int = 32,
        n_coarse: int = 2,
        n_fine: int = 2,
        contrastive_weight: float = 0.1,
        consistency_weight: float = 0.1,
        temperature: float = 0.07,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.mask_args = {"coarse_size": coarse_size, "fine_size": fine_size, "n_coarse": n_coarse, "n_fine": n_fine}
        self.contrastive_weight = float(contrastive_weight)
        self.consistency_weight = float(consistency_weight)
        self.temperature = float(temperature)

    def make_mask(self, batch_size, spatial):
        return multiscale_mask(spatial, device=self.state.device, **self.mask_args).expand(batch_size, *spatial)

    def selftrain_step(self, batch):
        if FDS_LABELED not in batch or FDS_UNLABELED not in batch:
            raise KeyError(
                "SwitchTrainer self-training needs the FDS images in the batch: add "
                "scripts.handlers.FrequencyDomainSwitch to train#handlers."
            )
        m, (x_ul, x_lu), ((pp, yi), (yj, pq)), _ = self.bidirectional_mix(batch)
        xl_f, xu_f = self.halves(batch[FDS_LABELED]), self.halves(batch[FDS_UNLABELED])
        # same mask, so the FDS views stay pixel-aligned with the plain mixes
        x_ul_f, x_lu_f = mix(xu_f[0], xl_f[0], m), mix(xl_f[1], xu_f[1], m)
        n = x_ul.shape[0]
        logits, emb = self.views_forward([x_ul, x_lu, x_ul_f, x_lu_f], project=True)
        o_ul, o_lu, o_ul_f, o_lu_f = logits.split(n)
        z_ul, z_lu, z_ul_f, z_lu_f = emb.split(n)
        w = self.pseudo_label_weight
        d1, c1 = mixed_dice_ce(o_ul, pp, yi, m, w, 1.0)
        d2, c2 = mixed_dice_ce(o_lu, yj, pq, m, 1.0, w)
        loss_mss = (d1 + c1 + d2 + c2) / 4
        # NCE(z_ul, z_ul') and NCE(z_lu, z_lu') have equal batch sizes: their mean is one NCE on the concatenation
        loss_con = pixel_info_nce(torch.cat([z_ul, z_lu]), torch.cat([z_ul_f, z_lu_f]), self.temperature)
        loss_cons = logit_consistency(torch.cat([o_ul, o_lu]), torch.cat([o_ul_f, o_lu_f]))
        loss = loss_mss + self.contrastive_weight * loss_con + self.consistency_weight * loss_cons
        logs = {"loss_mss": loss_mss, "loss_contrastive": loss_con, "loss_consistency": loss_cons}
        return loss, logs, o_lu.detach()
