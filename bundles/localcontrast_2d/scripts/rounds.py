# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Step 2 and the rounds of the self-training (ALGORITHMS.md 4.4): pseudo-labels between the training iterations.

At the end of step 1 (iteration ``supervised_iterations``) and of every joint round but the last (every
``round_iterations`` after it), :class:`RoundHandler`:

1. validates (unless the boundary is a validation iteration already) and loads the best-validation weights so far
   (``models/model.pt``; the current ones when no validation improved),
2. predicts every unlabelled volume slice by slice with them, optionally refines it with the dense CRF, and writes
   the labels as NIfTI files to ``<run>/pseudo_labels/round_<k>/`` (``k = 1`` for the baseline's, used by joint
   round 1),
3. hands the pseudo-labelled slices that hold every class to the loader,
4. at the end of step 1 only, re-initialises the heads g and h (the encoder-decoder is warm-started).

Resume: the handler runs on ``ITERATION_COMPLETED`` before the resume checkpoint of that iteration is written, so a
checkpoint at or after a round boundary always follows that round's pseudo-labels; a resumed run reads them back
from the round's ``pseudo_labels.json`` instead of predicting them again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .common.checkpoints import unwrap
from .common.engine import distributed
from .common.errors import ConfigValueError
from .common.runtime import is_main_process
from .pseudo_labels import (
    CRF_PACKAGE,
    MANIFEST,
    CRFSettings,
    CRFUnavailableError,
    crf_available,
    generate_pseudo_labels,
    pseudo_label_dir,
)

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["RoundHandler", "check_schedule", "round_of"]

logger = logging.getLogger(__name__)


def check_schedule(supervised_iterations: int, round_iterations: int, rounds: int) -> int:
    """Check the schedule and return the total number of iterations.

    Raises:
        ConfigValueError: a count that is not a non-negative integer, no supervised iteration, or joint rounds of
            no iteration.
    """
    for name, value in (("supervised_iterations", supervised_iterations), ("round_iterations", round_iterations),
                        ("rounds", rounds)):
        if int(value) < 0 or int(value) != value:
            raise ConfigValueError(f"{name} must be a non-negative integer, got {value!r}.")
    if int(supervised_iterations) < 1:
        raise ConfigValueError(f"supervised_iterations must be at least 1, got {supervised_iterations}.")
    if int(rounds) > 0 and int(round_iterations) < 1:
        raise ConfigValueError(f"round_iterations must be at least 1 when rounds is {rounds}.")
    return int(supervised_iterations) + int(rounds) * int(round_iterations)


def round_of(iteration: int, supervised_iterations: int, round_iterations: int, rounds: int) -> int:
    """The joint round that iteration ``iteration + 1`` belongs to: 0 in step 1, else ``1..rounds``."""
    if rounds <= 0 or iteration < supervised_iterations:
        return 0
    return min(rounds, (iteration - supervised_iterations) // max(round_iterations, 1) + 1)


class RoundHandler:
    """Pseudo-labels at the round boundaries of the joint training (see the module docstring).

    Args:
        network: the trained network (:class:`scripts.networks.LocalContrastUNet`).
        loader: the :class:`scripts.data.JointLoader` that receives the pseudo-labelled slices.
        unlabeled_items: the unlabelled volumes' datalist items.
        preprocess: the volume preprocessing with loading (:func:`scripts.transforms.preprocess_transforms`).
        make_dataset: items with a ``label`` to the dataset of their slices that hold every class.
        run_dir: the run folder (pseudo-labels under ``pseudo_labels/round_<k>``).
        best_path: the best-validation weights (``{"model": state_dict}``).
        supervised_iterations: iterations of step 1.
        round_iterations: iterations per joint round.
        rounds: joint rounds (0: the supervised baseline, nothing to do).
        reset_heads: re-initialise g and h after step 1 (the reference's "rand_init").
        reset_backbone_bn_stats: also restart the encoder-decoder's BatchNorm running statistics then.
        crf: dense-CRF settings, or None for the plain argmax.
        batch_size: slices per forward pass of the prediction.
        seed: the seed of the heads' re-initialisation.
        validator: the validation evaluator, run at a boundary that is not a validation iteration (``val_interval``
            does not divide it), so the pseudo-labels always come from weights validated up to the boundary.
        val_interval: the iterations between the training's own validations.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        loader: Any,
        unlabeled_items: Sequence[dict],
        preprocess: Callable[[dict], dict],
        make_dataset: Callable[[list[dict]], Any],
        run_dir: str,
        best_path: str,
        supervised_iterations: int,
        round_iterations: int,
        rounds: int,
        reset_heads: bool = True,
        reset_backbone_bn_stats: bool = False,
        crf: CRFSettings | None = None,
        batch_size: int = 20,
        seed: int = 0,
        validator: Engine | None = None,
        val_interval: int = 0,
    ) -> None:
        self.network = network
        self.loader = loader
        self.unlabeled_items = list(unlabeled_items)
        self.preprocess = preprocess
        self.make_dataset = make_dataset
        self.run_dir = Path(run_dir)
        self.best_path = Path(best_path)
        self.supervised_iterations = int(supervised_iterations)
        self.round_iterations = int(round_iterations)
        self.rounds = int(rounds)
        self.reset_heads = bool(reset_heads)
        self.reset_backbone_bn_stats = bool(reset_backbone_bn_stats)
        self.crf = crf
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.validator = validator
        self.val_interval = int(val_interval)
        if self.rounds > 0 and crf is not None and not crf_available():
            raise CRFUnavailableError(
                f"crf: true refines the pseudo-labels with a dense CRF, which needs the {CRF_PACKAGE} package "
                f"(pip install {CRF_PACKAGE}; it compiles with a C++ compiler), or set crf: false."
            )
        if self.rounds > 0 and not self.unlabeled_items:
            raise ConfigValueError("the self-training needs unlabelled volumes: the 'unlabeled' list is empty "
                                   "(rounds: 0 trains the supervised baseline).")

    def attach(self, engine: Engine) -> None:
        if self.rounds <= 0:
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def boundaries(self) -> list[int]:
        """The iterations after which pseudo-labels are made: ``[(iteration, round), ...]``'s iterations."""
        return [self.supervised_iterations + k * self.round_iterations for k in range(self.rounds)]

    # ------------------------------------------------------------------------------------------------------------
    def started(self, engine: Engine) -> None:
        """A resumed run inside the joint step reads back its round's pseudo-labels."""
        k = round_of(engine.state.iteration, self.supervised_iterations, self.round_iterations, self.rounds)
        if k == 0:
            return
        manifest = pseudo_label_dir(self.run_dir, k) / MANIFEST
        if manifest.is_file():
            items = json.loads(manifest.read_text())["pseudo_labeled"]
            logger.info(f"resuming joint round {k}: pseudo-labels read back from {manifest.parent}")
            self._use(items, k)
        else:  # interrupted between the checkpoint and the files (should not happen): predict them again
            self.make_round(k)

    def iteration_completed(self, engine: Engine) -> None:
        it = engine.state.iteration
        if it in self.boundaries() and it < engine.state.max_epochs * engine.state.epoch_length:
            k = self.boundaries().index(it) + 1
            if self.validator is not None and (self.val_interval <= 0 or it % self.val_interval):
                self.validator.run()  # the boundary is not one of the training's validations
            self.load_best()
            self.make_round(k)  # with the trained heads: the pseudo-labels come from the best weights as they are
            if k == 1 and self.reset_heads:
                g = torch.Generator().manual_seed(self.seed)
                unwrap(self.network).reset_heads(g, self.reset_backbone_bn_stats)
                logger.info("step 3: the heads g and h re-initialised, the encoder-decoder warm-started from the "
                            "best step-1 weights")

    # ------------------------------------------------------------------------------------------------------------
    def load_best(self) -> None:
        """Load the best-validation weights so far into the network (keep the current ones without any)."""
        if distributed():
            torch.distributed.barrier()  # rank 0 has written them
        if not self.best_path.is_file():
            logger.warning(f"no best-validation weights at {self.best_path}: the current weights make the "
                           "pseudo-labels")
            return
        record = torch.load(self.best_path, map_location="cpu", weights_only=False)
        unwrap(self.network).load_state_dict(record["model"])
        logger.info(f"pseudo-labels from the best-validation weights {self.best_path}")

    def make_round(self, k: int) -> None:
        """Predict and write round ``k``'s pseudo-labels (rank 0), then hand them to the loader (every rank)."""
        out_dir = pseudo_label_dir(self.run_dir, k)
        if is_main_process():
            items = generate_pseudo_labels(unwrap(self.network), self.unlabeled_items, self.preprocess, self.run_dir,
                                           k, crf=self.crf, batch_size=self.batch_size)
        if distributed():
            torch.distributed.barrier()
        if not is_main_process():
            items = json.loads((out_dir / MANIFEST).read_text())["pseudo_labeled"]
        self._use(items, k)

    def _use(self, items: list[dict], k: int) -> None:
        dataset = self.make_dataset(items)
        n = len(dataset) if dataset is not None else 0
        logger.info(f"joint round {k}: {n} pseudo-labelled slices hold every class"
                    + ("" if n else " (the contrastive term waits for better pseudo-labels)"))
        self.loader.set_unlabeled(dataset)
