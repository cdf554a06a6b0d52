# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Handlers of the Switch bundle: EMA teacher, Frequency Domain Switch and stage-aware checkpoints."""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .trainer import FDS_LABELED, FDS_UNLABELED, UNLABELED, StageEvents
from .transforms import amplitude_swap

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = [
    "EMATeacher",
    "FrequencyDomainSwitch",
    "ProgressLogger",
    "ResumeCheckpoint",
    "StageCheckpoint",
    "MissingWeightsError",
    "WeightsError",
    "WeightsLoader",
    "atomic_save",
    "is_main_process",
]


class MissingWeightsError(FileNotFoundError):
    """No weights file at ``ckpt_path``."""

    brief_report = True  # ``monai.bundle run`` shows its message without a traceback (scripts.utils.error_summary)


class WeightsError(ValueError):
    """A ``ckpt_path`` that is not a readable weights file or does not fit the config's network."""

    brief_report = True


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper, else the network itself."""
    return getattr(network, "module", network)


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 of a distributed run."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file then rename: a crash while saving leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class WeightsLoader:
    """Load trained weights into a network when an engine starts, with errors that say what is wrong.

    A drop-in for MONAI's ``CheckpointLoader`` with one ``model`` entry (the bundles' ``models/model.pt`` layout
    ``{"model": state_dict}``, or a bare state dict). The keys under ``optional_prefixes`` (training-only heads)
    may be absent from either side: a checkpoint without them keeps the network's own values, and a checkpoint
    with them loads into a network without them. Any other difference stops with an error that names the keys
    and the likely cause, instead of ``load_state_dict``'s traceback from inside the engine.

    Args:
        load_path: the checkpoint file.
        network: the network (a DistributedDataParallel wrapper is looked through).
        map_location: passed to ``torch.load``.
        optional_prefixes: state-dict key prefixes that need not match.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        network: torch.nn.Module,
        map_location: str | torch.device | None = None,
        optional_prefixes: Sequence[str] = (),
    ) -> None:
        self.load_path = Path(load_path)
        self.network = network
        self.map_location = map_location
        self.optional_prefixes = tuple(optional_prefixes)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self)

    def _optional(self, key: str) -> bool:
        return key.startswith(self.optional_prefixes)

    def __call__(self, engine: Engine | None = None) -> None:
        path = self.load_path
        if not path.is_file():
            raise MissingWeightsError(
                f"no weights at ckpt_path = {path}: train the bundle first, or pass the weights with "
                "--ckpt_path /path/to/model.pt."
            )
        try:
            state = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as e:
            raise WeightsError(f"ckpt_path = {path} is not a readable PyTorch weights file ({e}).") from e
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(
                f"ckpt_path = {path} holds no model weights: expected {{'model': state_dict}} or a state dict."
            )
        net = _unwrap(self.network)
        own = net.state_dict()
        missing = [k for k in own if k not in state and not self._optional(k)]
        unexpected = [k for k in state if k not in own and not self._optional(k)]
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
        if missing or unexpected or shapes:
            parts = [f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected),
                                         ("shape mismatches (checkpoint vs network)", shapes)) if keys]
            raise WeightsError(
                f"the weights in ckpt_path = {path} do not fit this config's {type(net).__name__}: "
                f"{'; '.join(parts)}. Load them with the configs they were trained with (the same method "
                "overlay, num_classes and network sizes)."
            )
        skipped = sorted({k.split(".")[0] for k in (set(own) ^ set(state)) if self._optional(k)})
        state = {k: v for k, v in state.items() if k in own}
        net.load_state_dict(state, strict=False)
        extra = f" (not in both, left as is: {', '.join(skipped)})" if skipped else ""
        self.logger.info(f"loaded weights from {path}{extra}")


class EMATeacher:
    """Exponential-moving-average teacher of the self-training stage (built on ``torch.optim.swa_utils``).

    At :attr:`StageEvents.SELFTRAIN_STARTED` the teacher becomes a copy of the student; after every
    self-training iteration its parameters are updated as ``theta_T <- decay * theta_T + (1 - decay) *
    theta_S`` and its BatchNorm buffers are copied from the student.

    Args:
        network: the student network.
        decay: EMA decay (0.99).
        train_mode: produce pseudo-labels with the teacher in train mode (dropout and batch statistics
            active), as the Switch reference code does; False (default) uses eval mode.
    """

    def __init__(self, network: torch.nn.Module, decay: float = 0.99, train_mode: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}.")
        self.student = network
        self.decay = float(decay)
        self.train_mode = bool(train_mode)
        self.model = AveragedModel(_unwrap(network), multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=False)
        self.model.requires_grad_(False)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.reset, StageEvents.SELFTRAIN_STARTED):
            engine.add_event_handler(StageEvents.SELFTRAIN_STARTED, self.reset)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Make the teacher an exact copy of the student (parameters and buffers)."""
        self.model.module.load_state_dict(_unwrap(self.student).state_dict())
        self.model.n_averaged.fill_(1)
        self.logger.info("EMA teacher initialised from the student.")

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "stage", "selftrain") != "selftrain":
            return
        student = _unwrap(self.student)
        self.model.update_parameters(student)
        for t, s in zip(self.model.module.buffers(), student.buffers()):
            t.copy_(s)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits for ``x`` (no gradient)."""
        self.model.train(self.train_mode)
        with torch.no_grad():
            return self.model(x)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class FrequencyDomainSwitch:
    """Frequency Domain Switch: swap the low-frequency amplitude of paired labelled/unlabelled images.

    During self-training, before each iteration, it adds ``image_fds`` and ``unlabeled_image_fds`` to the
    batch: image ``k`` of the labelled stream and image ``k`` of the unlabelled stream exchange the
    amplitude spectrum inside a centred square of side ``floor(size * beta)`` and keep their own phase
    (see :func:`scripts.transforms.amplitude_swap`).

    Args:
        beta: relative side of the swapped low-frequency square (0.0175: 4 px at 256).
    """

    def __init__(self, beta: float = 0.0175) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}.")
        self.beta = float(beta)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "stage", "selftrain") != "selftrain":
            return
        batch = engine.state.batch
        if UNLABELED not in batch:
            raise KeyError(f"FrequencyDomainSwitch needs the unlabelled stream ('{UNLABELED}') in the batch.")
        xl, xu = batch["image"], batch[UNLABELED]
        n = min(xl.shape[0], xu.shape[0])
        batch[FDS_LABELED], batch[FDS_UNLABELED] = amplitude_swap(xl[:n], xu[:n], self.beta)


class StageCheckpoint:
    """Best-validation checkpoints per training stage, and the hand-over between stages.

    After each validation run of ``validator`` it saves the student's weights when the key metric improved
    within the current stage: ``model_pretrain.pt`` during pre-training and ``model.pt`` (the bundle's
    deployable weights, ``{"model": state_dict}``) during self-training. At
    :attr:`StageEvents.PRETRAIN_COMPLETED` it restores the best pre-training student, optimiser state
    included (as the Switch reference does), and resets the learning rate to its initial value.

    When the run ends and the self-training stage's best validation score is below the pre-training stage's, it
    logs a warning naming both: self-training made the model worse on the validation images (on DDTI with 5
    labelled images this happened in 2 of 5 seeds, the two where Switch gained least: +0.2 and -3.2 Dice points).
    ``model.pt`` keeps the self-training weights, as the Switch paper's protocol does, unless ``keep_best_stage``
    is set: then it holds whichever stage's best weights scored higher on validation.

    Args:
        validator: the evaluator run by ``ValidationHandler``.
        network: the student network.
        optimizer: the student's optimizer.
        save_dir: folder of the checkpoints.
        metric_name: the validator metric to maximise.
        filename: weights of the final stage.
        pretrain_filename: weights of the pre-training stage.
        keep_best_stage: make ``model.pt`` the better-validated of the two stages' best weights (default: the
            self-training stage's, as published).
    """

    def __init__(
        self,
        validator: Engine,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        save_dir: str,
        metric_name: str = "val_mean_dice",
        filename: str = "model.pt",
        pretrain_filename: str = "model_pretrain.pt",
        keep_best_stage: bool = False,
    ) -> None:
        self.validator = validator
        self.network = network
        self.optimizer = optimizer
        self.save_dir = Path(save_dir)
        self.metric_name = metric_name
        self.filenames = {"pretrain": pretrain_filename, "selftrain": filename}
        self.keep_best_stage = bool(keep_best_stage)
        self.best: dict[str, dict] = {}
        self._pretrain_state: dict | None = None
        self._trainer: Engine | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        if not self.validator.has_event_handler(self.validation_completed, Events.COMPLETED):
            self.validator.add_event_handler(Events.COMPLETED, self.validation_completed)
        if not engine.has_event_handler(self.restore_pretrain, StageEvents.PRETRAIN_COMPLETED):
            engine.add_event_handler(StageEvents.PRETRAIN_COMPLETED, self.restore_pretrain)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def validation_completed(self, validator: Engine) -> None:
        trainer = self._trainer
        if trainer is None:
            return
        value = validator.state.metrics.get(self.metric_name)
        if value is None or value != value:  # missing or NaN
            return
        stage = getattr(trainer, "stage", "selftrain")
        best = self.best.get(stage)
        if best is not None and value <= best["value"]:
            return
        self.best[stage] = {"value": float(value), "iteration": int(trainer.state.iteration)}
        net = _unwrap(self.network)
        if is_main_process():
            atomic_save({"model": net.state_dict()}, self.save_dir / self.filenames[stage])
        if stage == "pretrain":
            self._pretrain_state = {
                "model": copy.deepcopy(net.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            }
        self.logger.info(
            f"new best {self.metric_name} of the {stage} stage: {value:.4f} at iteration "
            f"{trainer.state.iteration}, saved {self.save_dir / self.filenames[stage]}"
        )

    def restore_pretrain(self, engine: Engine) -> None:
        state = self._pretrain_state
        if state is None:
            path = self.save_dir / self.filenames["pretrain"]
            if not path.exists():
                self.logger.warning("no validated pre-training checkpoint: self-training starts from the last weights.")
                return
            state = {"model": torch.load(path, map_location="cpu", weights_only=True)["model"]}
        _unwrap(self.network).load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        best = self.best.get("pretrain", {})
        self.logger.info(f"self-training starts from the best pre-training weights {best or ''}.")

    def completed(self, engine: Engine) -> None:
        """Without a validated self-training checkpoint, the best pre-training weights are the model."""
        if not is_main_process():
            return
        final = self.save_dir / self.filenames["selftrain"]
        pre = self.save_dir / self.filenames["pretrain"]
        if not final.exists() and pre.exists():
            atomic_save(torch.load(pre, map_location="cpu", weights_only=True), final)
        elif not final.exists():
            atomic_save({"model": _unwrap(self.network).state_dict()}, final)
            self.logger.warning(f"no validation metric was recorded: saved the last weights as {final}.")
        self._compare_stages(final, pre)

    def _compare_stages(self, final: Path, pre: Path) -> None:
        """Warn when self-training ended below pre-training on validation; with ``keep_best_stage``, keep the better."""
        first, second = self.best.get("pretrain"), self.best.get("selftrain")
        if first is None or second is None or second["value"] >= first["value"]:
            return
        scores = (f"best {self.metric_name} {second['value']:.4f} (iteration {second['iteration']}) against "
                  f"{first['value']:.4f} (iteration {first['iteration']})")
        if self.keep_best_stage and pre.exists():
            atomic_save(torch.load(pre, map_location="cpu", weights_only=True), final)
            self.logger.warning(f"self-training ended below pre-training on the validation set ({scores}): "
                                f"keep_best_stage is set, so {final} now holds the pre-training weights.")
        else:
            self.logger.warning(f"self-training ended below pre-training on the validation set ({scores}): {final} "
                                f"holds the self-training weights, as published; {pre} holds the better-validated "
                                "pre-training weights (evaluate them with --ckpt_path, or train with "
                                "--keep_best_stage True to keep them).")

    def state_dict(self) -> dict:
        return {"best": self.best, "pretrain_state": self._pretrain_state}

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state.get("best", {}))
        self._pretrain_state = state.get("pretrain_state")


class ProgressLogger:
    """Log progress of a long run every ``interval`` iterations: position, losses, speed and ETA.

    Works for trainers (loss entries of ``engine.state.output``) and evaluators alike. Speed and ETA are
    measured from the start of the current stage (``engine.stage``), since a self-training iteration costs
    several pre-training ones: a rate averaged over both stages would promise an ETA far too short.

    Args:
        interval: iterations between two log lines.
        name: a label for the log lines (e.g. ``train``, ``test``).
    """

    def __init__(self, interval: int = 50, name: str = "train") -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.interval = int(interval)
        self.name = name
        self.logger = logging.getLogger(__name__)
        self._t0 = 0.0
        self._it0 = 0
        self._stage: str | None = None

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def started(self, engine: Engine) -> None:
        self._t0, self._it0 = time.perf_counter(), engine.state.iteration
        self._stage = getattr(engine, "stage", None)

    def __call__(self, engine: Engine) -> None:
        it = engine.state.iteration
        stage_now = getattr(engine, "stage", None)
        if stage_now != self._stage:  # the first iteration of a new stage is done: time the stage from here
            self._t0, self._it0, self._stage = time.perf_counter(), it, stage_now
        total = (engine.state.epoch_length or 0) * engine.state.max_epochs
        if (it % self.interval and it != total) or not is_main_process():
            return
        done = it - self._it0
        rate = (time.perf_counter() - self._t0) / max(done, 1)
        eta = rate * max(total - it, 0)
        out = engine.state.output
        if isinstance(out, (list, tuple)):  # decollated items: the loss entries are replicated in each
            out = out[0] if out else {}
        out = out if isinstance(out, dict) else {}
        losses = " ".join(
            f"{k} {float(v):.4f}"
            for k, v in out.items()
            if k.startswith("loss") and isinstance(v, (float, torch.Tensor))
        )
        stage = f" [{out['stage']}]" if "stage" in out else ""
        lr = ""
        opt = getattr(engine, "optimizer", None)
        if opt is not None:
            lr = f" lr {opt.param_groups[0]['lr']:.3g}"
        self.logger.info(
            f"{self.name}{stage} iteration {it}/{total} ({100.0 * it / max(total, 1):.1f}%) {losses}{lr} "
            f"{rate:.2f} s/it, ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s"
        )


class ResumeCheckpoint:
    """Checkpoints that resume a training run exactly, written atomically.

    Every ``interval`` epochs, and when the run completes, it writes ``<save_dir>/checkpoint.pt`` holding the
    state of every object of ``save_dict`` (student, teacher, optimiser, LR scheduler, data stream, stage
    bookkeeping...), the engine's epoch and iteration, its fp16 loss scaler if it has one, and the random number
    generators (torch, CUDA, numpy, Python). The file is written to a temporary name and renamed, so a crash
    while saving leaves the previous checkpoint intact. When the run starts and the file exists (an interrupted
    run started again with the same command), everything is restored and training continues from there, giving
    the same weights as an uninterrupted run.

    Attach it first, so the other handlers see the restored state.

    Args:
        save_dir: folder of ``checkpoint.pt``.
        save_dict: objects with ``state_dict``/``load_state_dict``.
        interval: epochs between two checkpoints.
        filename: checkpoint file name.
    """

    def __init__(
        self, save_dir: str, save_dict: dict[str, Any], interval: int = 1, filename: str = "checkpoint.pt"
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.path = Path(save_dir) / filename
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.interval = int(interval)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.resume, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.resume)
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
            engine.add_event_handler(Events.COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if not is_main_process():
            return
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["engine"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        scaler = getattr(engine, "scaler", None)  # fp16 loss scale: resuming at 2**16 would skip steps anew
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()
        state["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        atomic_save(state, self.path)

    def resume(self, engine: Engine) -> None:
        if not self.path.exists():
            return
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise RuntimeError(
                f"the checkpoint {self.path} cannot be read ({e}); move it away to start afresh."
            ) from None
        for k, obj in self.save_dict.items():
            if k in state:
                obj.load_state_dict(state[k])
        engine.state.epoch = int(state["engine"]["epoch"])
        engine.state.iteration = int(state["engine"]["iteration"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}.")
