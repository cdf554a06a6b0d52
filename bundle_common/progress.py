# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Progress lines with speed and ETA for long runs."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .runtime import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ProgressLogger"]


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
