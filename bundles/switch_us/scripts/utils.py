# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Run-time helpers: device, mixed precision, memory format and run folders."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "FINISHED_MARKER",
    "TwoStageCosine",
    "amp_context",
    "cpu_supports_bf16",
    "default_device",
    "resolve_amp_dtype",
    "resolve_run_dir",
    "to_memory_format",
]

logger = logging.getLogger(__name__)

FINISHED_MARKER = "FINISHED"
"""File written into a run folder when its workflow completed; such a folder is never written again."""


def default_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_amp_dtype(device: torch.device | str, amp: bool = True, dtype: str | torch.dtype | None = None):
    """The autocast dtype to use on ``device``, or None for full fp32.

    ``dtype=None`` picks bfloat16 on CPUs with native bf16 support (fp32 elsewhere on CPU), and on CUDA
    bfloat16 where supported, else float16.
    """
    if not amp:
        return None
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def amp_context(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``device`` with ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Return ``x`` in channels-last layout (2D or 3D) when asked, else unchanged."""
    if not channels_last:
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def resolve_run_dir(root: str, name: str, overwrite: bool = False) -> str:
    """The folder a run writes to: ``root/name``, never a finished run's folder.

    - a new or unfinished folder is used as is (an unfinished run resumes from its checkpoints);
    - a folder holding a finished run (``FINISHED`` marker) is never written again: the run goes to the first
      free ``root/name_2``, ``root/name_3``... unless ``overwrite`` is True, in which case the marker is removed
      and the old results are overwritten as the files are rewritten.

    The decision is logged, so the user always knows where the results are.
    """
    base = Path(root) / name
    candidate, n = base, 1
    while (candidate / FINISHED_MARKER).exists():
        if overwrite:
            logger.warning(f"overwriting the finished run in {candidate} (overwrite=True).")
            (candidate / FINISHED_MARKER).unlink()
            for stale in candidate.glob("models/checkpoint*.pt"):  # start afresh, do not resume the old run
                stale.unlink()
            break
        n += 1
        candidate = Path(root) / f"{name}_{n}"
    if candidate != base and not overwrite:
        logger.warning(f"{base} holds a finished run; this run writes to {candidate} (pass --overwrite True to reuse it).")
    candidate.mkdir(parents=True, exist_ok=True)
    return str(candidate)


class TwoStageCosine:
    """Learning-rate factor of a two-stage schedule: per-iteration cosine annealing to 0 within each stage.

    For ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration: the factor is
    ``0.5 (1 + cos(pi k / P))`` during the first ``pretrain_iterations`` steps and restarts at 1 for the
    self-training stage, ``0.5 (1 + cos(pi j / S))`` with ``j = k - P`` and ``S = total - P`` (the
    published Switch schedule: each stage has its own CosineAnnealingLR, eta_min 0).

    Args:
        pretrain_iterations: length of the first stage (0 for a single stage).
        total_iterations: length of the whole run.
    """

    def __init__(self, pretrain_iterations: int, total_iterations: int) -> None:
        if total_iterations <= 0 or not 0 <= pretrain_iterations <= total_iterations:
            raise ValueError(f"need 0 <= pretrain_iterations ({pretrain_iterations}) <= total_iterations ({total_iterations}).")
        self.pretrain = int(pretrain_iterations)
        self.total = int(total_iterations)

    def __call__(self, step: int) -> float:
        if step < self.pretrain:
            k, n = step, self.pretrain
        else:
            k, n = step - self.pretrain, max(self.total - self.pretrain, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(k, n) / n))
