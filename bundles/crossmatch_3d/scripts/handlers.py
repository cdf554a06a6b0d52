# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Handlers of the CrossMatch bundle: the final and best-validation weights.

The handlers every bundle shares (weights loading, exact resume, progress) are in :mod:`scripts.common`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .common.checkpoints import atomic_save, model_record
from .common.runtime import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint:
    """The deployable weights: the final weights (evaluated, as the CrossMatch paper does) and the best-validation ones.

    When training completes it writes ``<save_dir>/<filename>`` (``{"model": state_dict}``, the bundle's
    ``models/model.pt`` format); after each run of ``validator`` whose ``metric_name`` improved it writes
    ``<save_dir>/<best_filename>``. Only the main process writes; files are written atomically.

    Args:
        validator: the evaluator run by ``ValidationHandler`` (None: no best-validation checkpoint).
        network: the trained network.
        save_dir: folder of the weights.
        metric_name: the validator metric to maximise.
        filename: the final weights.
        best_filename: the best-validation weights.
        settings: what the model needs at inference (task, input size, classes...), recorded in both weights files
            (:func:`scripts.common.checkpoints.model_record`).
    """

    def __init__(
        self,
        validator: Engine | None,
        network: torch.nn.Module,
        save_dir: str,
        metric_name: str = "val_mean_dice",
        filename: str = "model.pt",
        best_filename: str = "model_best.pt",
        settings: dict | None = None,
    ) -> None:
        self.validator = validator
        self.settings = dict(settings) if settings else None
        self.network = network
        self.save_dir = Path(save_dir)
        self.metric_name = metric_name
        self.filename, self.best_filename = filename, best_filename
        self.best: dict[str, float] = {}
        self._trainer: Engine | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        if self.validator is not None and not self.validator.has_event_handler(
            self.validation_completed, Events.COMPLETED
        ):
            self.validator.add_event_handler(Events.COMPLETED, self.validation_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def validation_completed(self, validator: Engine) -> None:
        value = validator.state.metrics.get(self.metric_name)
        if self._trainer is None or value is None or value != value:  # missing or NaN
            return
        if self.best and value <= self.best["value"]:
            return
        self.best = {"value": float(value), "iteration": int(self._trainer.state.iteration)}
        if is_main_process():
            atomic_save(model_record(self.network, self.settings), self.save_dir / self.best_filename)
        self.logger.info(
            f"new best {self.metric_name} {value:.4f} at iteration {self._trainer.state.iteration}: "
            f"saved {self.save_dir / self.best_filename}"
        )

    def completed(self, engine: Engine) -> None:
        if is_main_process():
            atomic_save(model_record(self.network, self.settings), self.save_dir / self.filename)
            self.logger.info(
                f"final weights saved to {self.save_dir / self.filename}"
                + (
                    f" (best {self.metric_name} {self.best['value']:.4f} at iteration "
                    f"{self.best['iteration']} in {self.best_filename})"
                    if self.best
                    else ""
                )
            )

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state.get("best", {}))
