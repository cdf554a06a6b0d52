# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Trainers of the Switch bundle: Switch (MSS + FDS + contrastive + consistency), BCP and supervised.

Each is a :class:`monai.engines.Trainer` whose ``_iteration`` runs one method step on a two-stream batch
(``image``/``label`` from the labelled stream, ``unlabeled_image`` from the unlabelled stream, see
:class:`scripts.data.TwoStreamLoader`). Semi-supervised trainers run two stages in one engine: a
pre-training stage of ``pretrain_iterations`` on labelled data, then self-training with the EMA teacher.
Between them the trainer fires :attr:`StageEvents.PRETRAIN_COMPLETED` (the best pre-training weights are
restored by :class:`scripts.handlers.StageCheckpoint`) and :attr:`StageEvents.SELFTRAIN_STARTED` (the
teacher is initialised by :class:`scripts.handlers.EMATeacher`).

Mixed precision is device aware (bf16 autocast on CPUs with native bf16, bf16/fp16 on CUDA; fp16, on CUDA or
asked for with ``amp_dtype``, trains with a grad scaler) and the network and inputs can use the channels-last
memory format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.engines import Trainer, Workflow
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from scipy import ndimage
from torch.optim.optimizer import Optimizer

from .losses import logit_consistency, masked_dice_ce, mixed_dice_ce, pixel_info_nce
from .masks import bcp_mask, mix, multiscale_mask
from .utils import amp_context, resolve_amp_dtype, to_memory_format

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    EventEnum, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum", as_type="base"
    )

__all__ = [
    "BCPTrainer",
    "SemiSupervisedTrainer",
    "StageEvents",
    "SupervisedBaselineTrainer",
    "SwitchTrainer",
    "largest_component",
]

UNLABELED = "unlabeled_image"
FDS_LABELED = "image_fds"
FDS_UNLABELED = "unlabeled_image_fds"


class StageEvents(EventEnum):
    """Events of the two-stage (pre-train, self-train) schedule."""

    PRETRAIN_COMPLETED = "pretrain_completed"
    SELFTRAIN_STARTED = "selftrain_started"


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor would route every training op through its slow ``__torch_function__``."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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


class SemiSupervisedTrainer(Trainer):
    """Shared machinery: two-stage schedule, device-aware AMP, channels-last, batch parsing.

    Subclasses implement :meth:`pretrain_step` and :meth:`selftrain_step`, each returning
    ``(loss, logs, preds)``.

    Args:
        device: the device to train on.
        max_epochs: number of epochs; one epoch is ``epoch_length`` iterations.
        train_data_loader: an iterable of two-stream batches (``image``, ``label``, ``unlabeled_image``).
        network: the student network.
        optimizer: its optimizer.
        epoch_length: iterations per epoch (required for the infinite two-stream loader).
        pretrain_iterations: length of the pre-training stage (0: no pre-training stage).
        teacher: the :class:`scripts.handlers.EMATeacher` (for semi-supervised trainers).
        num_classes: number of classes of the segmentation.
        amp: use automatic mixed precision where the hardware supports it.
        amp_dtype: ``"bfloat16"``/``"float16"`` or None to pick per device.
        channels_last: use the channels-last memory format for inputs (convert the network too).
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
        pretrain_iterations: int = 0,
        teacher: Any | None = None,
        num_classes: int = 2,
        amp: bool = True,
        amp_dtype: str | None = None,
        channels_last: bool = True,
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
            event_names=[*(event_names or []), IterationEvents, StageEvents],
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            **extra,
        )
        self.network = network
        self.optimizer = optimizer
        self.teacher = teacher
        self.pretrain_iterations = int(pretrain_iterations)
        self.num_classes = int(num_classes)
        self.channels_last = bool(channels_last)
        self.amp_dtype = resolve_amp_dtype(self.state.device, amp, amp_dtype)
        self.amp = self.amp_dtype is not None
        # fp16 (CUDA without bf16, or asked for with amp_dtype) scales the loss against gradient underflow
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if self.amp_dtype == torch.float16 else None
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        self._world = torch.distributed.get_world_size() if _distributed() else 1
        if self._world > 1 and not hasattr(self.network, "module"):  # every rank starts from rank 0's weights
            for t in [*self.network.parameters(), *self.network.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    # ----------------------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """``"pretrain"`` during the first ``pretrain_iterations`` iterations, then ``"selftrain"``."""
        return "pretrain" if self.state.iteration <= self.pretrain_iterations else "selftrain"

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return to_memory_format(x.to(self.state.device, non_blocking=self.non_blocking), self.channels_last)

    def run(self) -> None:
        """Run the training, with this trainer's own loss scaler.

        :meth:`monai.engines.Trainer.run` would replace ``scaler`` with a CUDA fp16 ``GradScaler`` whenever ``amp``
        is set: bf16 runs would be loss-scaled for nothing, and every CPU run would warn that CUDA is unavailable.
        """
        Workflow.run(self)

    def parse_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """Move a two-stream batch to the device; labels become ``(B, H, W)`` long tensors."""
        out = {k: self._to(_plain(v)) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != Keys.LABEL}
        if Keys.LABEL in batch:
            label = _plain(batch[Keys.LABEL]).to(self.state.device, non_blocking=self.non_blocking)
            out[Keys.LABEL] = (label[:, 0] if label.ndim == out[Keys.IMAGE].ndim else label).round().long()
        return out

    def sync_gradients(self) -> None:
        """Average the gradients over the processes of a distributed run (one coalesced all-reduce).

        Switch runs the projector head outside the network's ``forward`` and only in self-training, which a
        ``DistributedDataParallel`` wrapper cannot follow, so the ``multi_gpu_train`` overlay does not wrap the
        network and the gradients are synchronised here instead. A no-op in single-process runs and for a wrapped
        network (DDP has already reduced its gradients).
        """
        if self._world <= 1 or hasattr(self.network, "module"):
            return
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self._world
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with amp_context(self.state.device, self.amp_dtype):
            return self.network(x)

    def pretrain_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        raise NotImplementedError

    def selftrain_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        raise NotImplementedError

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if engine.pretrain_iterations > 0 and engine.state.iteration == engine.pretrain_iterations + 1:
            engine.fire_event(StageEvents.PRETRAIN_COMPLETED)
        if engine.state.iteration == engine.pretrain_iterations + 1:
            engine.fire_event(StageEvents.SELFTRAIN_STARTED)
        batch = engine.parse_batch(batchdata)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        step = engine.pretrain_step if engine.stage == "pretrain" else engine.selftrain_step
        loss, logs, preds = step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the {engine.stage} loss is {float(loss)} at iteration {engine.state.iteration} "
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
        engine.state.output["stage"] = engine.stage
        # MONAI's convention (``decollate=True``): one dict per item, scalars replicated, so the stock
        # ``from_engine(["loss"], first=True)`` of MONAI's tracking settings (``--tracking mlflow``) reads the loss.
        engine.state.output = decollate_batch(engine.state.output, detach=True)
        return engine.state.output

    # ----------------------------------------------------------------------------------------------
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
        logits = self.forward(batch[Keys.IMAGE])
        dice, ce = masked_dice_ce(logits, batch[Keys.LABEL], softmax=not self.dice_on_logits)
        return (dice + ce) / 2, {"loss_dice": dice, "loss_ce": ce}, logits.detach()


class _MixTrainer(SemiSupervisedTrainer):
    """Shared pre-training of BCP and Switch: mix the two labelled halves and score both regions.

    Args:
        pretrain_patch_weight: weight of the labelled patch region in pre-training (1.0; the Switch code's 0.5).
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
        pseudo_label_weight: float = 0.5,
        pseudo_threshold: float = 0.5,
        per_view_forward: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pretrain_patch_weight = float(pretrain_patch_weight)
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
    """Bidirectional Copy-Paste (the BCP baseline of the Switch repository, ALGORITHMS.md 1.7)."""

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
