# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Trainers of the CrossMatch bundle: CrossMatch and the supervised-only baseline.

Both are :class:`monai.engines.Trainer` subclasses whose ``_iteration`` runs one method step on a multi-stream batch
from :class:`scripts.data.MultiStreamLoader`: ``image``/``label`` (labelled stream), ``unlabeled_image`` with its two
strong views ``unlabeled_image_s1``/``unlabeled_image_s2`` (unlabelled stream), and ``mix_image``/``mix_image_s1``/
``mix_image_s2`` from an independently shuffled unlabelled stream (the CutMix partners).

The CrossMatch step follows ALGORITHMS.md section 2.3 (teacher / teaching-assistant / student streams, confidence-
masked Dice distillation, two CutMix'd strong views, ``eta = 0.3``, loss ``(Lx + 0.25 Ls1 + 0.25 Ls2 + w Lkd) / 2``).
All feature-perturbed streams come from the networks' ``forward_fp``: ONE encoder pass on ``cat(A, U)`` and ONE batched
decoder pass on ``cat(A, U, U_weak, U_strong)``. The network stays in train mode (batch statistics) throughout, as in the
reference. By default the teacher flows (the unperturbed ``U`` rows and the no-grad mix passes) run without the
network's built-in dropout (``teacher_dropout=False``, ALGORITHMS.md 2.6.3); ``teacher_dropout=True`` reproduces the
reference, where that dropout is active in every train-mode forward.

Mixed precision is device aware (bf16 autocast on CPUs with native bf16, bf16/fp16 on CUDA; fp16 trains with a grad scaler);
the network and inputs can use the channels-last memory format (``channels_last_3d`` for volumes).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.engines import Trainer, Workflow
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer

from .losses import dice_ignore, supervised_loss
from .masks import cutmix_boxes, paste
from .utils import (
    amp_context,
    network_to_memory_format,
    resolve_amp_dtype,
    resolve_channels_last,
    spatial_dims,
    to_memory_format,
)

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CrossMatchTrainer", "SupervisedBaselineTrainer", "confidence_threshold", "frozen_bn_statistics"]

UNLABELED = "unlabeled_image"
MIX = "mix_image"
S1, S2 = "_s1", "_s2"
THRESHOLD_SCHEDULES = ("fixed", "head")


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor would route every training op through its slow ``__torch_function__``."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


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


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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


class _BaseTrainer(Trainer):
    """Shared machinery: device-aware AMP, channels-last, batch parsing, the loss/update sequence.

    Subclasses implement :meth:`step` returning ``(loss, logs, preds)``.

    Args:
        device: the device to train on.
        max_epochs: number of epochs; one epoch is ``epoch_length`` iterations.
        train_data_loader: an iterable of multi-stream batches (:class:`scripts.data.MultiStreamLoader`).
        network: the network (``VNet`` or ``UNet2D`` of :mod:`scripts.networks`, possibly DDP-wrapped).
        optimizer: its optimizer.
        epoch_length: iterations per epoch (required: the loader is endless).
        num_classes: number of classes, background included.
        amp: use automatic mixed precision where the hardware supports it.
        amp_dtype: ``"bfloat16"``/``"float16"`` or None to pick per device.
        channels_last: channels-last memory format for the network and inputs; ``"auto"``: when mixed precision runs
            (:func:`scripts.utils.resolve_channels_last`).
        train_handlers: handlers attached to the engine.
        key_train_metric, additional_metrics, metric_cmp_fn, postprocessing, iteration_update, event_names,
        event_to_attr, decollate, to_kwargs, non_blocking: as in :class:`monai.engines.SupervisedTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        epoch_length: int | None = None,
        num_classes: int = 2,
        amp: bool = True,
        amp_dtype: str | None = None,
        channels_last: bool | str = "auto",
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable | None = None,
        train_handlers: Sequence | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        to_kwargs: dict | None = None,
    ) -> None:
        extra = {"metric_cmp_fn": metric_cmp_fn} if metric_cmp_fn is not None else {}
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=train_handlers,
            amp=False,  # MONAI's flag means CUDA-only fp16 autocast; this trainer handles AMP itself
            event_names=[*(event_names or []), IterationEvents],
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            **extra,
        )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        self.network = network
        self.optimizer = optimizer
        self.num_classes = int(num_classes)
        self.binary = self.num_classes == 2
        self.amp_dtype = resolve_amp_dtype(self.state.device, amp, amp_dtype)
        self.amp = self.amp_dtype is not None
        self.channels_last = resolve_channels_last(channels_last, self.amp_dtype)
        # fp16 (CUDA without bf16, or asked for with amp_dtype) scales the loss against gradient underflow
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if self.amp_dtype == torch.float16 else None
        self._net = getattr(network, "module", network)  # the model inside a DDP wrapper (encode/decode/forward_fp)
        self._spatial_dims = spatial_dims(self._net)
        network_to_memory_format(self.network, self.channels_last)
        self._checked_shapes: set[tuple[int, ...]] = set()
        self._world = torch.distributed.get_world_size() if _distributed() else 1
        if self._world > 1:  # every rank starts from rank 0's weights
            for t in [*self._net.parameters(), *self._net.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    # ----------------------------------------------------------------------------------------------
    def _to(self, x: Any) -> torch.Tensor:
        x = _plain(x).to(self.state.device, non_blocking=self.non_blocking)
        return to_memory_format(x.float(), self.channels_last)

    def _check_amp_shape(self, spatial: Sequence[int]) -> None:
        """Fall back to fp32 where CPU bf16 is known to be wrong for this input size (checked once per size).

        oneDNN's bf16 ``Conv3d`` weight gradient on CPU returns garbage (relative errors of 1 to 1e37, measured with
        torch 2.13) when the first spatial size of a feature map is 2; the V-Net halves the input 4 times, so inputs
        whose first spatial size is 32, 34 or 35 (2 at the bottleneck) hit it and the run diverges.
        """
        if self._spatial_dims != 3 or self.amp_dtype != torch.bfloat16 or torch.device(self.state.device).type != "cpu":
            return
        if any(int(spatial[0]) // 2**k == 2 for k in range(5)):
            logging.getLogger(__name__).warning(
                f"AMP disabled: CPU bf16 3D convolution gradients are wrong when a feature map's first spatial size is 2 "
                f"(input {tuple(spatial)}); training in fp32. Use crops whose first size is not 32-35 (e.g. 48) for AMP."
            )
            self.amp_dtype, self.amp = None, False

    def run(self) -> None:
        """Run the training, with this trainer's own loss scaler.

        :meth:`monai.engines.Trainer.run` would replace ``scaler`` with a CUDA fp16 ``GradScaler`` whenever ``amp``
        is set: bf16 runs would be loss-scaled for nothing, and every CPU run would warn that CUDA is unavailable.
        """
        Workflow.run(self)

    def parse_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """Move the image streams to the device; labels become ``(B, *spatial)`` long tensors."""
        out = {k: self._to(v) for k, v in batch.items() if isinstance(v, torch.Tensor) and "image" in k}
        if Keys.LABEL in batch:
            label = _plain(batch[Keys.LABEL]).to(self.state.device, non_blocking=self.non_blocking)
            out[Keys.LABEL] = (label[:, 0] if label.ndim == out[Keys.IMAGE].ndim else label).round().long()
        return out

    def sync_gradients(self) -> None:
        """Average the gradients over the processes of a distributed run (one coalesced all-reduce).

        CrossMatch calls the network's ``forward_fp``/``encode``/``decode`` methods, which a
        ``DistributedDataParallel`` wrapper does not see, so the bundle does not wrap the network and synchronises the
        gradients here instead (the ``multi_gpu_train`` overlay). A no-op in single-process runs.
        """
        if self._world <= 1 or self._net is not self.network:
            return
        grads = [p.grad for p in self._net.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self._world
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def autocast(self):
        """The autocast context of this trainer's device and AMP dtype."""
        return amp_context(self.state.device, self.amp_dtype)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        raise NotImplementedError

    def _iteration(self, engine: _BaseTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.parse_batch(batchdata)
        shape = tuple(batch[Keys.IMAGE].shape[2:])
        if shape not in engine._checked_shapes:
            engine._checked_shapes.add(shape)
            engine._check_amp_shape(shape)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, logs, preds = engine.step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss is {float(loss)} at iteration {engine.state.iteration} "
                f"({', '.join(f'{k} {float(v):.4g}' for k, v in logs.items())}): training stopped before the update; "
                "the last checkpoint written before this iteration is kept. Lower the learning rate or check the data."
            )
        engine.state.output = {Keys.IMAGE: batch[Keys.IMAGE], Keys.LABEL: batch[Keys.LABEL], Keys.PRED: preds}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.sync_gradients()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.sync_gradients()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.state.output.update({k: float(v.detach()) for k, v in logs.items()})
        # MONAI's convention (``decollate=True``): one dict per item, scalars replicated, so the stock
        # ``from_engine(["loss"], first=True)`` of MONAI's tracking settings (``--tracking mlflow``) reads the loss.
        engine.state.output = decollate_batch(engine.state.output, detach=True)
        return engine.state.output

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
    """CrossMatch: image- and feature-level perturbations with self-knowledge distillation (ALGORITHMS.md 2.3).

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
        cutmix_faithful_axes: reproduce the reference's transposed 3D box (ALGORITHMS.md 2.2); False: correct axes.
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
