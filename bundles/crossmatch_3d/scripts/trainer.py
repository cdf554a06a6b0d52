# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Trainers of the CrossMatch bundle: CrossMatch and the supervised-only baseline.

Both are :class:`monai.engines.Trainer` subclasses whose ``_iteration`` runs one method step on a multi-stream batch
from :class:`scripts.data.MultiStreamLoader`: ``image``/``label`` (labelled stream), ``unlabeled_image`` with its two
strong views ``unlabeled_image_s1``/``unlabeled_image_s2`` (unlabelled stream), and ``mix_image``/``mix_image_s1``/
``mix_image_s2`` from an independently shuffled unlabelled stream (the CutMix partners).

The CrossMatch step follows docs/methods.md 4.4 and 4.5 (teacher / teaching-assistant / student streams, confidence-
masked Dice distillation, two CutMix'd strong views, ``eta = 0.3``, loss ``(Lx + 0.25 Ls1 + 0.25 Ls2 + w Lkd) / 2``).
All feature-perturbed streams come from the networks' ``forward_fp``: ONE encoder pass on ``cat(A, U)`` and ONE batched
decoder pass on ``cat(A, U, U_weak, U_strong)``. The network stays in train mode (batch statistics) throughout, as in the
reference. By default the teacher flows (the unperturbed ``U`` rows and the no-grad mix passes) run without the
network's built-in dropout (``teacher_dropout=False``, docs/methods.md 4.9); ``teacher_dropout=True`` reproduces the
reference, where that dropout is active in every train-mode forward.

Mixed precision is device aware (bf16 autocast on CPUs with native bf16, bf16/fp16 on CUDA; fp16 trains with a grad scaler);
the network and inputs can use the channels-last memory format (``channels_last_3d`` for volumes).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.utils.enums import CommonKeys as Keys

from .common.engine import StreamTrainer
from .common.keys import MIX, STRONG_SUFFIXES, UNLABELED
from .losses import dice_ignore, supervised_loss
from .masks import cutmix_boxes, paste

__all__ = ["CrossMatchTrainer", "SupervisedBaselineTrainer", "confidence_threshold", "frozen_bn_statistics"]

S1, S2 = STRONG_SUFFIXES
THRESHOLD_SCHEDULES = ("fixed", "head")


@contextlib.contextmanager
def frozen_bn_statistics(network: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Batch norm layers normalise with their batch statistics (train mode) but leave the running averages unchanged.

    Used for the passes whose images are not from the data distribution seen at inference (the strong views with
    CutMix, and the no-grad teacher passes), so that the eval-mode statistics come from the clean-image pass only.
    Training itself (forward and gradients) is unaffected.
    """
    layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum


def confidence_threshold(iteration: int, tau: float, schedule: str = "fixed", ramp_iterations: int = 17000) -> float:
    """The pseudo-label confidence threshold at ``iteration`` (1-based).

    Args:
        iteration: the current iteration.
        tau: the fixed threshold (``fixed``: paper, 0.85 LA / 0.95 ACDC) or the starting ``tau0`` (``head``: 0.75).
        schedule: ``"fixed"`` or ``"head"``, the CrossMatch LA code's rule (the paper-era code with ``tau0`` 0.85, the
            HEAD code with 0.75): ``tau0`` at the first iteration, then ``(tau0 + (1 - tau0) * exp(-5 (1 - min(t, T) /
            T)^2)) * ln 2`` with ``T = ramp_iterations`` and ``t = iteration - 2``: the code updates the threshold
            after each iteration's loss from its 0-based counter, so iteration ``k`` uses the ramp at ``k - 2``.
        ramp_iterations: the ramp length of ``head`` (17,000 in the reference).
    """
    if schedule == "fixed" or iteration <= 1:
        if schedule not in THRESHOLD_SCHEDULES:
            raise ValueError(f"threshold schedule must be one of {THRESHOLD_SCHEDULES}, got {schedule!r}.")
        return float(tau)
    if schedule != "head":
        raise ValueError(f"threshold schedule must be one of {THRESHOLD_SCHEDULES}, got {schedule!r}.")
    t = min(iteration - 2, ramp_iterations) / ramp_iterations
    return (tau + (1.0 - tau) * math.exp(-5.0 * (1.0 - t) ** 2)) * math.log(2.0)


class _BaseTrainer(StreamTrainer):
    """The CrossMatch bundle's trainers: :class:`scripts.common.engine.StreamTrainer` plus the CPU bf16 3D guard.

    Subclasses implement :meth:`step` returning ``(loss, logs, preds)``.

    Args:
        args, kwargs: see :class:`scripts.common.engine.StreamTrainer` (``train_data_loader`` yields the
            multi-stream batches of :class:`scripts.data.MultiStreamLoader`; ``network`` is ``VNet`` or ``UNet2D``
            of :mod:`scripts.networks`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binary = self.num_classes == 2
        self._checked_shapes: set[tuple[int, ...]] = set()

    def _check_amp_shape(self, spatial: Sequence[int]) -> None:
        """Fall back to fp32 where CPU bf16 is known to be wrong for this input size (checked once per size).

        oneDNN's bf16 ``Conv3d`` weight gradient on CPU returns garbage (relative errors of 1 to 1e37 with torch 2.13)
        when the first spatial size of a feature map is 2; the V-Net halves the input 4 times, so inputs whose first
        spatial size is 32, 34 or 35 (2 at the bottleneck) hit it and the run diverges.
        """
        if self._spatial_dims != 3 or self.amp_dtype != torch.bfloat16 or torch.device(self.state.device).type != "cpu":
            return
        if any(int(spatial[0]) // 2**k == 2 for k in range(5)):
            logging.getLogger(__name__).warning(
                f"AMP disabled: CPU bf16 3D convolution gradients are wrong when a feature map's first spatial size is 2 "
                f"(input {tuple(spatial)}); training in fp32. Use crops whose first size is not 32-35 (e.g. 48) for AMP."
            )
            self.amp_dtype, self.amp = None, False

    def parse_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """The common batch parsing, then the bf16 guard for each new input size."""
        out = super().parse_batch(batch)
        shape = tuple(out[Keys.IMAGE].shape[2:])
        if shape not in self._checked_shapes:
            self._checked_shapes.add(shape)
            self._check_amp_shape(shape)
        return out

    def supervised(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``Lx = (CE + Dice) / 2`` on labelled logits (the reference's Dice variant for 2 or more classes)."""
        ce, dice = supervised_loss(logits, label, binary=self.binary)
        return (ce + dice) / 2, {"loss_ce": ce, "loss_dice": dice}


class SupervisedBaselineTrainer(_BaseTrainer):
    """The supervised-only baseline: ``(CE + Dice) / 2`` on the labelled stream, same data and schedule as CrossMatch.

    The unlabelled keys of the batch, if any, are ignored.
    """

    def step(self, batch):
        with self.autocast():
            logits = self.network(batch[Keys.IMAGE])
        loss, logs = self.supervised(logits, batch[Keys.LABEL])
        return loss, logs, logits.detach()


class CrossMatchTrainer(_BaseTrainer):
    """CrossMatch: image- and feature-level perturbations with self-knowledge distillation (docs/methods.md 4.4).

    Args:
        conf_threshold: pseudo-label confidence threshold ``tau`` (0.85 LA, 0.95 ACDC; ``tau0`` for ``head``).
        threshold_schedule: ``"fixed"`` (paper) or ``"head"`` (the HEAD code's LA ramp with its ln 2 factor).
        threshold_ramp_iterations: the ``head`` ramp length (17,000).
        eta: weight of the TA-to-student distillation inside ``Lkd`` (0.3).
        strong_weight: weight of each strong-view loss ``Ls1``/``Ls2`` (0.25).
        kd_weight: weight of ``Lkd`` (1.0 LA, 0.5 ACDC).
        fp_weak: weak feature-perturbation channel dropout (0.25).
        fp_strong: strong feature-perturbation channel dropout (0.75).
        teacher_dropout: keep the network's built-in dropout active in the clean pass (labelled rows, teacher and
            teaching-assistant flows) and the no-grad mix pass, as the reference does. False (default): that pass
            is dropout-free, so the teacher is the same function the supervised loss trains and that inference
            runs (with dropout only on the labelled rows, the dropout-free path that makes the teacher and the
            eval-mode network received no gradient: LA demo validation Dice 0.14 after 100 iterations, against
            0.97 on the same crops with the dropout on). The strong-view pass keeps the built-in dropout.
        cutmix_prob: probability of a CutMix box per sample (0.5).
        cutmix_faithful_axes: reproduce the reference's transposed 3D box (docs/methods.md 4.3); False: correct axes.
        mix_teacher_eval: predict the mix image's CutMix targets with the network in eval mode (running batch-norm
            statistics, no dropout), as the paper-era code (commit d00de40) does; False (default): train mode, as the
            HEAD code (and with ``teacher_dropout`` False, without the built-in dropout).
        mix_ta_targets: the teaching assistants' targets inside box 2 come from the mix image's own perturbed flows
            (a no-grad feature-perturbation pass on it, the HEAD code); False: the paper-era code, which pastes the
            unlabelled image's own teaching-assistant predictions there (a no-op, so no mix TA pass runs).
        loss_divisor: the loss is ``(Lx + strong_weight (Ls1 + Ls2) + kd_weight Lkd) / loss_divisor`` (2; the
            paper-era code divides by 3, with strong_weight 0.5 and kd_weight 1.0).
        clean_bn_statistics: accumulate the batch-norm running statistics (used in eval mode) from the clean pass
            (labelled + weak unlabelled images) only; the strong-view and no-grad passes still normalise with their
            own batch statistics, as in the reference, but leave the running averages alone. False: every train-mode
            pass updates them (the reference). Gradients are the same either way.
        args, kwargs: see :class:`_BaseTrainer`.
    """

    def __init__(
        self,
        *args: Any,
        conf_threshold: float = 0.85,
        threshold_schedule: str = "fixed",
        threshold_ramp_iterations: int = 17000,
        eta: float = 0.3,
        strong_weight: float = 0.25,
        kd_weight: float = 1.0,
        fp_weak: float = 0.25,
        fp_strong: float = 0.75,
        teacher_dropout: bool = False,
        cutmix_prob: float = 0.5,
        cutmix_faithful_axes: bool = False,
        clean_bn_statistics: bool = True,
        mix_teacher_eval: bool = False,
        mix_ta_targets: bool = True,
        loss_divisor: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if threshold_schedule not in THRESHOLD_SCHEDULES:
            raise ValueError(f"threshold_schedule must be one of {THRESHOLD_SCHEDULES}, got {threshold_schedule!r}.")
        for name, v in (
            ("conf_threshold", conf_threshold),
            ("eta", eta),
            ("fp_weak", fp_weak),
            ("fp_strong", fp_strong),
            ("cutmix_prob", cutmix_prob),
        ):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}.")
        self.conf_threshold = float(conf_threshold)
        self.threshold_schedule = threshold_schedule
        self.threshold_ramp_iterations = int(threshold_ramp_iterations)
        self.eta = float(eta)
        self.strong_weight = float(strong_weight)
        self.kd_weight = float(kd_weight)
        self.fp_weak, self.fp_strong = float(fp_weak), float(fp_strong)
        self.teacher_dropout = bool(teacher_dropout)
        self.cutmix_prob = float(cutmix_prob)
        self.cutmix_faithful_axes = bool(cutmix_faithful_axes)
        self.clean_bn_statistics = bool(clean_bn_statistics)
        self.mix_teacher_eval = bool(mix_teacher_eval)
        self.mix_ta_targets = bool(mix_ta_targets)
        if loss_divisor <= 0:
            raise ValueError(f"loss_divisor must be positive, got {loss_divisor}.")
        self.loss_divisor = float(loss_divisor)

    def fp(self, x_a: torch.Tensor, x_u: torch.Tensor, noisy: bool) -> tuple[torch.Tensor, ...]:
        """The network's feature-perturbation forward (one encoder, one batched decoder pass) under autocast.

        ``noisy``: whether the network's built-in dropout applies to both halves (the channel-dropout streams are
        always perturbed).
        """
        with self.autocast():
            outs = self._net.forward_fp(
                x_a, x_u, noisy_a=noisy, noisy_u=noisy, weak=self.fp_weak, strong=self.fp_strong
            )
        return tuple(o.float() for o in outs)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The plain (no feature perturbation) teacher flow on ``x``, without gradient.

        With ``mix_teacher_eval`` the network predicts in eval mode (running statistics, no dropout) and is put back
        in train mode afterwards.
        """
        if self.mix_teacher_eval:
            self._net.eval()
            try:
                with self.autocast():
                    return self._net(x).float()
            finally:
                self._net.train()
        with self.autocast():
            if self.teacher_dropout:
                return self.network(x).float()
            rows = torch.zeros(x.shape[0], dtype=torch.bool)
            return self._net.decode(self._net.encode(x, noisy_rows=rows), head_dropout=False).float()

    @staticmethod
    def confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max softmax, argmax)`` of logits, per pixel/voxel."""
        conf, label = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
        return conf, label

    def distill(self, logits: torch.Tensor, target: torch.Tensor, conf: torch.Tensor, tau: float) -> torch.Tensor:
        """Dice on the voxels whose teacher confidence is at least ``tau`` (the others are ignored)."""
        return dice_ignore(logits, target, conf < tau, binary=self.binary)

    def step(self, batch):
        for key in (UNLABELED, UNLABELED + S1, UNLABELED + S2, MIX, MIX + S1, MIX + S2):
            if key not in batch:
                raise KeyError(
                    f"CrossMatch needs '{key}' in the batch (scripts.data.MultiStreamLoader with unlabelled data)."
                )
        x, y = batch[Keys.IMAGE], batch[Keys.LABEL]
        u_w, u_s1, u_s2 = batch[UNLABELED], batch[UNLABELED + S1], batch[UNLABELED + S2]
        m_w, m_s1, m_s2 = batch[MIX], batch[MIX + S1], batch[MIX + S2]
        n = u_w.shape[0]
        if m_w.shape[0] != n or x.shape[0] != n:
            raise ValueError(
                f"CrossMatch needs equal batch sizes, got labelled {x.shape[0]}, unlabelled {n}, mix {m_w.shape[0]}."
            )
        tau = confidence_threshold(
            self.state.iteration, self.conf_threshold, self.threshold_schedule, self.threshold_ramp_iterations
        )
        noisy_teacher = self.teacher_dropout
        spatial = tuple(u_w.shape[2:])
        box1 = cutmix_boxes(n, spatial, self.cutmix_prob, faithful_axes=self.cutmix_faithful_axes, device=u_w.device)
        box2 = cutmix_boxes(n, spatial, self.cutmix_prob, faithful_axes=self.cutmix_faithful_axes, device=u_w.device)

        frozen = frozen_bn_statistics(self._net, self.clean_bn_statistics)
        with (
            torch.no_grad(),
            frozen,
        ):  # the mix image's teacher and TA predictions, pasted into the targets in the boxes
            conf_a, y_a = self.confidence(self.teacher_logits(m_w))
            if self.mix_ta_targets:
                _, _, mix_w, mix_s = self.fp(x, m_w, noisy=noisy_teacher)
                conf_aw, y_aw = self.confidence(mix_w)
                conf_as, y_as = self.confidence(mix_s)

        u_s1 = paste(u_s1, m_s1, box1)
        u_s2 = paste(u_s2, m_s2, box2)
        p_x, p_w, p_w_weak, p_w_strong = self.fp(x, u_w, noisy=noisy_teacher)
        with frozen_bn_statistics(self._net, self.clean_bn_statistics):
            p_s1, p_s2, p_s2_weak, p_s2_strong = self.fp(u_s1, u_s2, noisy=True)

        conf, t = self.confidence(p_w)  # teacher: the weak view without feature perturbation
        conf_w, t_w = self.confidence(p_w_weak)  # teaching assistants: the perturbed weak flows
        conf_s, t_s = self.confidence(p_w_strong)
        t1, c1 = paste(t, y_a, box1), paste(conf, conf_a, box1)
        t2, c2 = paste(t, y_a, box2), paste(conf, conf_a, box2)
        if self.mix_ta_targets:
            t_w2, c_w2 = paste(t_w, y_aw, box2), paste(conf_w, conf_aw, box2)
            t_s2, c_s2 = paste(t_s, y_as, box2), paste(conf_s, conf_as, box2)
        else:  # the paper-era code pastes the TA predictions of u_w into themselves
            t_w2, c_w2, t_s2, c_s2 = t_w, conf_w, t_s, conf_s

        loss_x, logs = self.supervised(p_x, y)
        loss_s1 = self.distill(p_s1, t1, c1, tau)
        loss_s2 = self.distill(p_s2, t2, c2, tau)
        loss_tkd = (
            self.distill(p_w_weak, t, conf, tau)
            + self.distill(p_w_strong, t, conf, tau)
            + self.distill(p_s2_weak, t2, c2, tau)
            + self.distill(p_s2_strong, t2, c2, tau)
        ) / 4
        loss_dkd = (self.distill(p_s2_weak, t_w2, c_w2, tau) + self.distill(p_s2_strong, t_s2, c_s2, tau)) / 2
        loss_kd = (1.0 - self.eta) * loss_tkd + self.eta * loss_dkd
        loss = (loss_x + self.strong_weight * (loss_s1 + loss_s2) + self.kd_weight * loss_kd) / self.loss_divisor
        with torch.no_grad():
            mask_ratio = (conf >= tau).float().mean()
        logs.update(
            {
                "loss_x": loss_x,
                "loss_s1": loss_s1,
                "loss_s2": loss_s2,
                "loss_tkd": loss_tkd,
                "loss_dkd": loss_dkd,
                "threshold": torch.tensor(tau),
                "confident_ratio": mask_ratio,
            }
        )
        return loss, logs, p_x.detach()
