# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The machinery every method's trainer shares: device-aware AMP, memory format, batch parsing and the update.

A method's trainer subclasses :class:`StreamTrainer` and implements :meth:`StreamTrainer.step`, which returns
``(loss, logs, preds)`` for one batch of the data streams (:mod:`.sampling`). The rest is MONAI's
``SupervisedTrainer`` sequence: the ``IterationEvents``, the (scaled) backward and optimiser step, and
``engine.state.output`` with ``CommonKeys``, decollated as MONAI's tracking handlers expect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.engines import Trainer, Workflow
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer

from .runtime import (
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

__all__ = ["StreamTrainer", "distributed", "plain"]

logger = logging.getLogger(__name__)


def plain(x: Any) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor would route every training op through its slow ``__torch_function__``."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def distributed() -> bool:
    """Whether this process is one of a ``torch.distributed`` run."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class StreamTrainer(Trainer):
    """A ``monai.engines.Trainer`` for multi-stream batches, with device-aware mixed precision.

    Mixed precision: bf16 autocast on CPUs with native bf16, bf16 or fp16 on CUDA; fp16 trains with a grad scaler
    (:func:`.runtime.resolve_amp_dtype`). MONAI's own ``amp`` flag (CUDA-only fp16) is not used.

    Subclasses implement :meth:`step`; they may add events (``event_names``), entries of the output
    (:meth:`output_logs`) and work before each iteration (:meth:`iteration_started`).

    Args:
        device: the device to train on.
        max_epochs: number of epochs; one epoch is ``epoch_length`` iterations.
        train_data_loader: an iterable of multi-stream batches (endless: ``epoch_length`` is required).
        network: the network (possibly wrapped in DistributedDataParallel).
        optimizer: its optimizer.
        epoch_length: iterations per epoch.
        num_classes: number of classes, background included.
        amp: use automatic mixed precision where the hardware supports it.
        amp_dtype: ``"bfloat16"``/``"float16"`` or None to pick per device.
        channels_last: channels-last memory format for the network and inputs; ``"auto"``: with mixed precision,
            and in fp32 on CPUs with AVX-512 (:func:`.runtime.resolve_channels_last`).
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
        self.amp_dtype = resolve_amp_dtype(self.state.device, amp, amp_dtype)
        self.amp = self.amp_dtype is not None
        self.channels_last = resolve_channels_last(channels_last, self.amp_dtype, self.state.device)
        # fp16 (CUDA without bf16, or asked for with amp_dtype) scales the loss against gradient underflow
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if self.amp_dtype == torch.float16 else None
        self._net = getattr(network, "module", network)  # the model inside a DDP wrapper (encode/decode/project)
        self._spatial_dims = spatial_dims(self._net)
        network_to_memory_format(self.network, self.channels_last)
        self._world = torch.distributed.get_world_size() if distributed() else 1
        if self._world > 1 and self._net is self.network:  # every rank starts from rank 0's weights
            for t in [*self._net.parameters(), *self._net.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    # ----------------------------------------------------------------------------------------------
    def _to(self, x: Any) -> torch.Tensor:
        x = plain(x).to(self.state.device, non_blocking=self.non_blocking)
        return to_memory_format(x.float(), self.channels_last)

    def run(self) -> None:
        """Run the training, with this trainer's own loss scaler.

        :meth:`monai.engines.Trainer.run` would replace ``scaler`` with a CUDA fp16 ``GradScaler`` whenever ``amp``
        is set: bf16 runs would be loss-scaled for nothing, and every CPU run would warn that CUDA is unavailable.
        """
        Workflow.run(self)

    def parse_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """Move the image streams (the tensors whose key holds ``image``) to the device as float; the label becomes
        a ``(B, *spatial)`` long tensor. Other entries (spacing, slice indices, meta data) stay behind."""
        out = {k: self._to(v) for k, v in batch.items() if isinstance(v, torch.Tensor) and "image" in k}
        if Keys.LABEL in batch:
            out[Keys.LABEL] = self.label_indices(batch[Keys.LABEL], out[Keys.IMAGE].ndim)
        return out

    def label_indices(self, label: Any, image_ndim: int) -> torch.Tensor:
        """A label batch on the device as ``(B, *spatial)`` long class indices (a channel axis of 1 dropped)."""
        label = plain(label).to(self.state.device, non_blocking=self.non_blocking)
        return (label[:, 0] if label.ndim == image_ndim else label).round().long()

    def sync_gradients(self) -> None:
        """Average the gradients over the processes of a distributed run (one coalesced all-reduce).

        The methods call network methods other than ``forward`` (a projector head, ``encode``/``decode``), which a
        ``DistributedDataParallel`` wrapper cannot follow, so the ``multi_gpu_train`` overlays do not wrap the
        network and the gradients are synchronised here instead. A no-op in single-process runs and for a wrapped
        network (DDP has already reduced its gradients).
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` under this trainer's autocast."""
        with self.autocast():
            return self.network(x)

    # ---- what a method defines -------------------------------------------------------------------
    def iteration_started(self) -> None:
        """Called at the start of every iteration, before the batch is parsed (stage events, for example)."""

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One method step on a parsed batch: ``(loss, logs, preds)``; ``logs`` maps names to scalar tensors."""
        raise NotImplementedError

    def output_logs(self) -> dict[str, Any]:
        """Extra entries of ``engine.state.output`` after an iteration (the stage name, for example)."""
        return {}

    def describe_loss(self) -> str:
        """How to name this iteration's loss in the error of a non-finite loss."""
        return "the loss"

    # ----------------------------------------------------------------------------------------------
    def _iteration(self, engine: StreamTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        engine.iteration_started()
        batch = engine.parse_batch(batchdata)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, logs, preds = engine.step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{engine.describe_loss()} is {float(loss)} at iteration {engine.state.iteration} "
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
        engine.state.output.update(engine.output_logs())
        # MONAI's convention (``decollate=True``): one dict per item, scalars replicated, so the stock
        # ``from_engine(["loss"], first=True)`` of MONAI's tracking settings (``--tracking mlflow``) reads the loss.
        engine.state.output = decollate_batch(engine.state.output, detach=True)
        return engine.state.output
