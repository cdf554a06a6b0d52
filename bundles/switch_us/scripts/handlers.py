# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Handlers of the Switch bundle: EMA teacher, Frequency Domain Switch and stage-aware checkpoints.

The handlers every bundle shares (weights loading, exact resume, progress) are in :mod:`scripts.common`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .common.checkpoints import atomic_save, model_record, unwrap
from .common.keys import FDS_LABELED, FDS_UNLABELED, UNLABELED, StageEvents
from .common.runtime import is_main_process
from .transforms import amplitude_swap

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["EMATeacher", "FrequencyDomainSwitch", "ModelCheckpoint"]


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
        self.model = AveragedModel(unwrap(network), multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=False)
        self.model.requires_grad_(False)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.reset, StageEvents.SELFTRAIN_STARTED):
            engine.add_event_handler(StageEvents.SELFTRAIN_STARTED, self.reset)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Make the teacher an exact copy of the student (parameters and buffers)."""
        self.model.module.load_state_dict(unwrap(self.student).state_dict())
        self.model.n_averaged.fill_(1)
        self.logger.info("EMA teacher initialised from the student.")

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "stage", "selftrain") != "selftrain":
            return
        student = unwrap(self.student)
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


class ModelCheckpoint:
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
        settings: what the model needs at inference (input size, classes...), recorded in every weights file
            (:func:`scripts.common.checkpoints.model_record`).
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
        settings: dict | None = None,
    ) -> None:
        self.validator = validator
        self.settings = dict(settings) if settings else None
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
        net = unwrap(self.network)
        if is_main_process():
            atomic_save(model_record(net, self.settings), self.save_dir / self.filenames[stage])
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
        unwrap(self.network).load_state_dict(state["model"])
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
            atomic_save(model_record(self.network, self.settings), final)
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
