# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference building blocks of every bundle: a mixed-precision wrapper for any MONAI inferer, batch-norm folding,
and slice-wise inference of a 2D network on 3D volumes.

- :class:`AmpInferer`: wraps any inferer so that the network runs under device-aware autocast and channels-last,
  returns fp32, and (optionally) yields softmax probabilities per window or slice, which the wrapped inferer then
  averages. An eval-mode network runs as a copy with its batch norms folded into the preceding convolutions
  (:func:`fold_batch_norm`): the same function, fewer passes over the activations.
- :class:`SliceResizeInferer`: a 2D network on a 3D volume, slice by slice along the last axis; each slice is resized
  to the network's size (256x256), predicted, and resized back to the volume's own size (the ACDC protocol).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .runtime import amp_context, network_to_memory_format, resolve_amp_dtype, resolve_channels_last, to_memory_format

__all__ = ["AmpInferer", "SliceResizeInferer", "fold_batch_norm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fold_batch_norm(network: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``network`` in which every batch norm that directly follows a convolution inside an
    ``nn.Sequential`` is folded into that convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by
    ``nn.Identity``. The copy computes the same function as ``network.eval()`` (up to float rounding) with one pass
    less over the activations per folded layer; ``network`` itself is not modified.

    Returns:
        the folded copy and the number of batch norms folded.
    """
    net = copy.deepcopy(network).eval()
    folded = 0
    for seq in net.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, _CONVS) and isinstance(bn, nn.modules.batchnorm._BatchNorm)
                    and bn.running_mean is not None and bn.num_features == conv.out_channels):
                transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
                seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                seq._modules[b] = nn.Identity()
                folded += 1
    return net, folded


class AmpInferer(Inferer):
    """Wrap an inferer: the network runs under device-aware autocast and channels-last and returns fp32 (softmax).

    Args:
        inferer: the wrapped MONAI inferer (sliding window, slice; default ``SimpleInferer``).
        amp: use mixed precision where supported (bf16 on CPUs with native bf16; bf16/fp16 on CUDA).
        amp_dtype: force ``"bfloat16"``/``"float16"``; None picks per device.
        channels_last: feed the network channels-last tensors (a folded copy is converted here; convert a network
            that is not folded once, see :func:`.runtime.network_to_memory_format`); ``"auto"``: with mixed
            precision, and in fp32 on CPUs with AVX-512 (:func:`.runtime.resolve_channels_last`).
        softmax: return softmax probabilities per window/slice (averaged by the wrapped inferer), else logits.
        fold_bn: run an eval-mode ``nn.Module`` network as a copy with its batch norms folded into the convolutions
            (:func:`fold_batch_norm`, made once per call: the network may have been trained in between; about 40 ms
            for the V-Net, under 1 % of a paper-stride volume). With mixed precision on the CPU the copy's weights
            are converted to the autocast dtype once (the network still runs under autocast, which keeps its fp32
            operations in fp32); autocast would otherwise cast every weight at every window or slice batch.
    """

    def __init__(self, inferer: Inferer | None = None, amp: bool = True, amp_dtype: str | None = None,
                 channels_last: bool | str = "auto", softmax: bool = True, fold_bn: bool = True) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.amp, self.amp_dtype, self.channels_last, self.softmax = amp, amp_dtype, channels_last, softmax
        self.fold_bn = fold_bn

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        dtype = resolve_amp_dtype(inputs.device, self.amp, self.amp_dtype)
        channels_last = resolve_channels_last(self.channels_last, dtype, inputs.device)
        if self.fold_bn and isinstance(network, nn.Module) and not network.training:
            network, _ = fold_batch_norm(getattr(network, "module", network))  # the model inside a DDP wrapper
            network_to_memory_format(network, channels_last)
            if dtype is not None and inputs.device.type == "cpu":
                network.to(dtype)  # the copy's weights once, instead of autocast casting them at every call
        elif channels_last and isinstance(network, nn.Module):
            # the memory format the trainer gave the network: an evaluation-only run computes what the training
            # run's evaluation computed (a network in another format can round differently under autocast)
            network_to_memory_format(network, True)

        def predictor(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            x = torch.as_tensor(x)
            with amp_context(x.device, dtype):
                y = network(to_memory_format(x, channels_last), *a, **k)
            y = y.float().contiguous()
            return torch.softmax(y, dim=1) if self.softmax else y

        with torch.inference_mode():
            return self.inferer(torch.as_tensor(inputs), predictor, *args, **kwargs)


class SliceResizeInferer(Inferer):
    """Run a 2D network on every slice (last axis) of a ``(B, C, H, W, D)`` volume at a fixed in-plane size.

    Each slice is resized to ``roi_size`` (``mode``: ``"bilinear"`` or the reference's ``"nearest"``), predicted, and
    the network output resized back to ``(H, W)`` (``back_mode``: ``"bilinear"`` on probabilities, or ``"nearest"``,
    the reference's order-0 zoom of the label map), then the slices are stacked back into the volume.
    A ``(B, C, H, W)`` input is treated as one slice per batch item.

    Args:
        roi_size: the network's input size (256, 256).
        slice_batch_size: slices per network call.
        mode: interpolation of the image slices.
        back_mode: interpolation of the outputs back to the native size.
    """

    def __init__(self, roi_size: Sequence[int] = (256, 256), slice_batch_size: int = 16, mode: str = "bilinear",
                 back_mode: str = "bilinear") -> None:
        super().__init__()
        self.roi_size = tuple(int(s) for s in roi_size)
        self.slice_batch_size = int(slice_batch_size)
        self.mode, self.back_mode = mode, back_mode

    @staticmethod
    def _resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
        """``x`` (``(N, C, H, W)``) resized to ``size`` with ``mode``; ``x`` itself when it has that size already."""
        if tuple(x.shape[2:]) == tuple(size):
            return x
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x, size=tuple(size), mode=mode, **kw)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The network's outputs for every slice of ``inputs``, at the inputs' in-plane size.

        Args:
            inputs: a ``(B, C, H, W, D)`` volume batch, or ``(B, C, H, W)`` slices.
            network: the 2D network (or predictor) called on ``(n, C, *roi_size)`` slice batches.
            args: further positional arguments of ``network``.
            kwargs: further keyword arguments of ``network``.

        Returns:
            ``(B, K, H, W, D)`` (or ``(B, K, H, W)``) float32 outputs, ``K`` the network's output channels.
        """
        squeeze = inputs.ndim == 4
        vol = inputs.unsqueeze(-1) if squeeze else inputs
        b, c, h, w, d = vol.shape
        slices = vol.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        outs = []
        for chunk in slices.split(self.slice_batch_size):
            y = network(self._resize(chunk, self.roi_size, self.mode), *args, **kwargs)
            outs.append(self._resize(y.float(), (h, w), self.back_mode))
        out = torch.cat(outs)
        out = out.reshape(b, d, out.shape[1], h, w).permute(0, 2, 3, 4, 1)
        return out[..., 0] if squeeze else out
