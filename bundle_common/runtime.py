# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Run-time settings: device, mixed precision, memory format, CPU threads and the allocator."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "amp_context",
    "cpu_has_avx512",
    "cpu_supports_bf16",
    "default_device",
    "is_main_process",
    "keep_freed_memory",
    "network_to_memory_format",
    "resolve_amp_dtype",
    "resolve_channels_last",
    "set_threads",
    "spatial_dims",
    "to_memory_format",
]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters


def is_main_process() -> bool:
    """True outside distributed runs and on rank 0 of a distributed run."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def default_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_has_avx512() -> bool:
    """Whether oneDNN runs AVX-512 kernels here: the CPU has AVX512F and ``ONEDNN_MAX_CPU_ISA`` does not cap it."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap != "ALL" and not cap.startswith(("AVX512", "AVX10", "AMX")):
        return False
    return "avx512f" in _cpu_flags()


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
    _warn_amp_unavailable(device.type)
    return None


@functools.cache
def _warn_amp_unavailable(device_type: str) -> None:
    """Say once per device type that ``amp`` was asked for but the run is fp32 (reached only off CUDA)."""
    logger.warning(
        f"amp is on but {device_type} has no native bfloat16 here (a CPU needs AVX512-BF16 or AMX): running in "
        "fp32; `--amp False` makes this explicit."
    )


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


def resolve_channels_last(
    channels_last: bool | str, amp_dtype: torch.dtype | None, device: torch.device | str = "cpu"
) -> bool:
    """Whether to use the channels-last memory format.

    ``"auto"``: when mixed precision runs, and in fp32 on CPUs with AVX-512. There, every bundle's fp32 training
    iteration was 1.16-1.33x faster channels-last; with AVX2 kernels the same comparison ranged from 0.97x to 1.39x
    (``docs/results/speed_memory.md``), so fp32 stays contiguous there and on CUDA.

    Raises:
        ValueError: a value other than a boolean or ``"auto"``.
    """
    if isinstance(channels_last, str):
        if channels_last != "auto":
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}.")
        return amp_dtype is not None or (torch.device(device).type == "cpu" and cpu_has_avx512())
    return bool(channels_last)


def spatial_dims(network: torch.nn.Module) -> int:
    """3 for a network with 3D convolutions (the V-Net), else 2."""
    return 3 if any(isinstance(m, torch.nn.Conv3d) for m in network.modules()) else 2


def network_to_memory_format(network: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """Convert a network's parameters to the channels-last layout of its spatial dimensions (in place)."""
    if channels_last:
        network.to(memory_format=torch.channels_last_3d if spatial_dims(network) == 3 else torch.channels_last)
    return network


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op CPU threads (None or <= 0 leaves the default)."""
    if num_threads and num_threads > 0:
        torch.set_num_threads(int(num_threads))


def keep_freed_memory(enabled: bool = True) -> bool:
    """Keep the memory torch frees on the CPU inside this process for reuse, instead of returning it to the system.

    glibc serves every large allocation (the activations of a training step, a sliding-window batch) with fresh
    ``mmap`` pages and unmaps them on free, so each iteration faults in and zeroes its whole working set again
    (``docs/results/speed_memory.md`` measures what that costs). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from
    the heap and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` keeps freed heap memory, so the pages are reused. The
    resident memory then stays near the run's peak
    instead of falling between iterations. Does nothing on systems without glibc (macOS, Windows, musl).

    Args:
        enabled: False leaves the allocator as it is (the config key ``keep_freed_memory``).

    Returns:
        whether the setting was applied.
    """
    if not enabled or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        applied = False
    if not applied:
        logger.info("keep_freed_memory: glibc's mallopt is not available; the allocator is left as it is.")
    return applied
