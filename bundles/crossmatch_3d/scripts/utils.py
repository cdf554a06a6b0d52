# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Run-time helpers: device, mixed precision, memory format, run folders and the poly schedule.

Names and behaviour follow ``bundles/switch_us/scripts/utils.py`` (a bundle is self-contained, so this is a copy).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "FINISHED_MARKER",
    "PolyLR",
    "amp_context",
    "cpu_supports_bf16",
    "default_device",
    "resolve_amp_dtype",
    "resolve_run_dir",
    "set_threads",
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


def resolve_amp_dtype(
    device: torch.device | str, amp: bool = True, dtype: str | torch.dtype | None = None
) -> torch.dtype | None:
    """The autocast dtype to use on ``device``, or None for full fp32.

    ``dtype=None`` picks bfloat16 on CPUs with native bf16 support (fp32 elsewhere on CPU), and on CUDA bfloat16
    where supported, else float16.
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
    """Return ``x`` in channels-last layout (2D: ``channels_last``, 3D: ``channels_last_3d``) when asked."""
    if not channels_last:
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def network_to_memory_format(network: torch.nn.Module, channels_last: bool, spatial_dims: int) -> torch.nn.Module:
    """Convert a network's parameters to the channels-last layout matching ``spatial_dims`` (in place)."""
    if channels_last:
        network.to(memory_format=torch.channels_last_3d if spatial_dims == 3 else torch.channels_last)
    return network


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None or <= 0 leaves the default)."""
    if num_threads and num_threads > 0:
        torch.set_num_threads(int(num_threads))


def resolve_run_dir(root: str, name: str, overwrite: bool = False) -> str:
    """The folder a run writes to: ``root/name``, never a finished run's folder.

    - a new or unfinished folder is used as is (an unfinished run resumes from its checkpoints);
    - a folder holding a finished run (``FINISHED`` marker) is never written again: the run goes to the first free
      ``root/name_2``, ``root/name_3``... unless ``overwrite`` is True, in which case the marker is removed.
    """
    base = Path(root) / name
    candidate, n = base, 1
    while (candidate / FINISHED_MARKER).exists():
        if overwrite:
            logger.warning(f"overwriting the finished run in {candidate} (overwrite=True).")
            (candidate / FINISHED_MARKER).unlink()
            break
        n += 1
        candidate = Path(root) / f"{name}_{n}"
    if candidate != base and not overwrite:
        logger.warning(f"{base} holds a finished run; this run writes to {candidate} (pass --overwrite True to reuse it).")
    candidate.mkdir(parents=True, exist_ok=True)
    return str(candidate)


class PolyLR:
    """Learning-rate factor ``(1 - step / total) ** power`` for ``torch.optim.lr_scheduler.LambdaLR``.

    Stepped once per iteration after the optimizer step, so the rate used at iteration ``i + 1`` is
    ``lr0 (1 - i / total)^0.9``, as the reference sets it after every update. ``total`` is the last iteration
    (paper) or the HEAD code's hard-coded 17,000 horizon.
    """

    def __init__(self, total_iterations: int, power: float = 0.9) -> None:
        if total_iterations <= 0:
            raise ValueError(f"total_iterations must be positive, got {total_iterations}.")
        self.total = int(total_iterations)
        self.power = float(power)

    def __call__(self, step: int) -> float:
        return max(1.0 - min(step, self.total) / self.total, 0.0) ** self.power
