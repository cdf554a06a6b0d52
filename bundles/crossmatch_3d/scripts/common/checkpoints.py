# GENERATED from bundles/_common/checkpoints.py by scripts/sync_common.py: edit that file, not this copy (python scripts/sync_common.py)
# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Weights files: atomic saving, loading with clear errors, and checkpoints that resume a run exactly."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .errors import MissingWeightsError, WeightsError
from .runtime import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["ResumeCheckpoint", "WeightsLoader", "atomic_save", "unwrap"]

def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper, else the network itself."""
    return getattr(network, "module", network)


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
        net = unwrap(self.network)
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
