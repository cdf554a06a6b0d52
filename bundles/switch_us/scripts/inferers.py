# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""A MONAI inferer that runs the network with device-aware mixed precision and channels-last inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from .common.runtime import amp_context, network_to_memory_format, resolve_amp_dtype, to_memory_format

__all__ = ["AmpInferer"]


class AmpInferer(Inferer):
    """Run ``inferer`` (default :class:`monai.inferers.SimpleInferer`) under autocast on the input's device.

    The dtype is chosen per device at call time (bf16 on CPUs with native bf16, bf16/fp16 on CUDA; fp32
    when ``amp`` is False or the hardware has no fast half precision) and the output is float32.

    Args:
        inferer: the wrapped inferer.
        amp: enable mixed precision.
        amp_dtype: force ``"bfloat16"`` or ``"float16"``.
        channels_last: feed inputs in channels-last memory format, and convert the network to it (as the trainer
            does), so that an evaluation-only run computes exactly what the training run's evaluation computed.
    """

    def __init__(self, inferer: Inferer | None = None, amp: bool = True, amp_dtype: str | None = None,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.inferer = inferer or SimpleInferer()
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        dtype = resolve_amp_dtype(inputs.device, self.amp, self.amp_dtype)
        inputs = to_memory_format(inputs, self.channels_last)
        if self.channels_last and isinstance(network, torch.nn.Module):
            network_to_memory_format(network, True)
        with amp_context(inputs.device, dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out
