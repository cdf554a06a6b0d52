# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Weights files: atomic saving, loading with clear errors, and checkpoints that resume a run exactly."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .errors import MissingWeightsError, SettingsMismatchError, WeightsError, is_bundle_cli
from .overrides import fire_keyword_args
from .runtime import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = [
    "EXPORT_METADATA",
    "SCHEDULE_KEYS",
    "SETTINGS_KEY",
    "ModelCheckpoint",
    "ResumeCheckpoint",
    "WeightsLoader",
    "atomic_save",
    "bundle_version",
    "check_settings",
    "model_record",
    "publish_model",
    "read_settings",
    "unwrap",
]

SETTINGS_KEY = "settings"
"""The entry of a weights file (``{"model": state_dict, "settings": {...}}``) that records how the model was trained."""

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


def bundle_version(bundle_root: str | os.PathLike) -> str:
    """The ``version`` of the bundle's ``configs/metadata.json`` (``"unknown"`` when it cannot be read)."""
    try:
        return str(json.loads((Path(bundle_root) / "configs" / "metadata.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def model_record(network: torch.nn.Module, settings: dict | None = None) -> dict:
    """The content of a bundle weights file: ``{"model": state_dict}`` plus the model's ``settings`` when given.

    ``settings`` holds what the model needs at inference (input size, classes and their names, channels, intensity
    scaling, the bundle and its version): evaluation and inference read them back (:func:`read_settings`).
    """
    record: dict[str, Any] = {"model": unwrap(network).state_dict()}
    if settings:
        record[SETTINGS_KEY] = json.loads(json.dumps(dict(settings), default=_plain_value))
    return record


def _plain_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, set):
        return sorted(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_settings(path: str | os.PathLike) -> dict:
    """The settings recorded in a weights file (``{}`` for a missing file, or weights saved without settings)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"ckpt_path = {path} is not a readable PyTorch weights file ({e}).") from e
    settings = state.get(SETTINGS_KEY) if isinstance(state, dict) else None
    return dict(settings) if isinstance(settings, dict) else {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def check_settings(trained: dict, current: dict, allow_mismatch: bool = False,
                   ckpt_path: str | os.PathLike = "the weights") -> dict:
    """Refuse settings of this run that contradict those the weights were trained with.

    Evaluation and inference configs read their input size and classes from the weights (``trained_settings``, from
    :func:`read_settings`), so a mismatch means the user set one explicitly (``--image_size 256`` for a model trained
    at 128 px would silently give a far lower Dice). Keys the weights do not record are not compared.

    Args:
        trained: the recorded settings (the configs' ``trained_settings``; read once).
        current: this run's values, by setting name.
        allow_mismatch: only warn (the config key ``allow_settings_mismatch``), for a user who means it.
        ckpt_path: the weights file, for the message.

    Returns:
        the recorded settings.

    Raises:
        SettingsMismatchError: a value differs, naming both values and how to go on.
    """
    diffs = [f"{k}: the model was trained with {trained[k]!r}, this run sets {v!r}"
             for k, v in current.items() if k in trained and not _same(trained[k], v)]
    if diffs:
        text = f"the settings of this run contradict those recorded in {ckpt_path}: {'; '.join(diffs)}"
        if not allow_mismatch:
            raise SettingsMismatchError(
                f"{text}. Run with the recorded values (leave those options out where the config reads them from the "
                "weights), or pass --allow_settings_mismatch True if you mean it."
            )
        logging.getLogger(__name__).warning(f"{text} (allow_settings_mismatch is set).")
    return trained


SCHEDULE_KEYS = ("pretrain_iterations", "selftrain_iterations", "max_iterations", "max_epochs", "epoch_length",
                 "acdc_epochs", "supervised_iterations", "round_iterations", "rounds", "train#trainer#max_epochs",
                 "train::trainer::max_epochs")
"""Config keys whose command-line override shortens (or changes) a training schedule."""


def schedule_overrides(argv: Sequence[str] | None = None) -> list[str]:
    """The schedule keys (:data:`SCHEDULE_KEYS`) a ``python -m monai.bundle run`` command line overrides, e.g.
    ``["--max_iterations"]``; empty outside such a command line (MONAI Label, tests calling ``run`` in-process).

    The command line is read as the override check reads it (:func:`.overrides.fire_keyword_args`).
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not is_bundle_cli(argv[0]):
        return []
    return [f"--{key}" for key in fire_keyword_args(argv[1:], set()) if key in SCHEDULE_KEYS]


EXPORT_METADATA = "model_metadata.json"
"""Written beside the published model: the bundle's metadata plus ``trained_settings``, for ``ckpt_export``."""


def _write_export_metadata(models: Path, settings: dict) -> None:
    """``<models>/model_metadata.json``: ``configs/metadata.json`` plus the model's settings.

    ``python -m monai.bundle ckpt_export ... --meta_file models/model_metadata.json`` embeds it in the TorchScript
    file (its ``metadata.json`` extra file), so an exported model carries its settings too.
    """
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((models.parent / "configs" / "metadata.json").read_text())
    meta["trained_settings"] = settings
    (models / EXPORT_METADATA).write_text(json.dumps(meta, indent=4) + "\n")


def publish_model(ckpt_path: str | os.PathLike, models_dir: str | os.PathLike, run_dir: str | os.PathLike,
                  publish: bool | None = None, argv: Sequence[str] | None = None) -> Path | None:
    """Make a finished run's weights the bundle's model, ``<models_dir>/model.pt``, never losing the previous one.

    Called at the end of a training workflow, after the test evaluation: the run's own weights stay in its run
    folder, ``model.pt`` is replaced by a copy, and the model it replaces moves to ``<models_dir>/previous/``
    (``model_<date>_<run>.pt``). ``model.json`` beside it says which run the model came from, and
    ``model_metadata.json`` is the bundle's metadata with the model's settings (for the TorchScript export). Only the
    main process publishes.

    Args:
        ckpt_path: the run's deployable weights.
        models_dir: the bundle's ``models/`` folder.
        run_dir: the run folder (recorded in ``model.json``).
        publish: the config key ``publish_model``: True publishes, False leaves ``models/`` as it is, None (the
            default) publishes unless the command line changed the training schedule (``--max_iterations 4``, a
            trial run: :func:`schedule_overrides`); ``--publish_model True`` publishes such a run too.
        argv: the command line (``sys.argv`` when None).

    Returns:
        the published file, or None when nothing was published.
    """
    log = logging.getLogger(__name__)
    if publish is None:
        shortened = schedule_overrides(argv)
        if shortened:
            log.info(f"the schedule was changed on the command line ({', '.join(shortened)}): the run's model stays in "
                     f"{ckpt_path} and models/model.pt is left as it is (--publish_model True publishes it).")
            return None
    elif not publish:
        log.info(f"the run's model stays in {ckpt_path}; models/model.pt was left as it is (publish_model: false).")
        return None
    if not is_main_process():
        return None
    src, models = Path(ckpt_path), Path(models_dir)
    target, info = models / "model.pt", models / "model.json"
    models.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if target.is_file():
        previous = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(info.read_text())
        old_run = Path(str(previous.get("run_dir", "unknown"))).name or "unknown"
        keep = models / "previous" / f"model_{now}_{old_run}.pt"
        keep.parent.mkdir(exist_ok=True)
        os.replace(target, keep)
        log.info(f"the previous models/model.pt (from run {old_run}) is kept as {keep}.")
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)
    settings = read_settings(target)
    record = {"source": str(src.resolve()), "run_dir": str(Path(run_dir).resolve()), "published": now,
              "settings": settings}
    info.write_text(json.dumps(record, indent=2) + "\n")
    _write_export_metadata(models, settings)
    log.info(f"models/model.pt is now the model of run {Path(run_dir).name} ({src}); its provenance: {info}.")
    return target


class ModelCheckpoint:
    """A run's weights: the final ones, and the best-validation ones.

    When training completes it writes ``<save_dir>/<filename>`` (:func:`model_record`, the bundles'
    ``models/model.pt`` format); after each run of ``validator`` whose ``metric_name`` improved it writes
    ``<save_dir>/<best_filename>``. Only the main process writes; files are written atomically. CrossMatch
    evaluates the final weights (``filename: model.pt``), as its paper does; MGCC the best-validation ones
    (``best_filename: model.pt``).

    Args:
        validator: the evaluator run by ``ValidationHandler`` (None: no best-validation checkpoint).
        network: the trained network.
        save_dir: folder of the weights.
        metric_name: the validator metric to maximise.
        filename: the final weights.
        best_filename: the best-validation weights.
        settings: what the model needs at inference (task, input size, classes...), recorded in both weights files
            (:func:`model_record`).
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
