# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Networks of the CrossMatch reference: the UA-MT V-Net (LA, 3D) and the SSL4MIS 2D U-Net (ACDC).

Both expose ``encode(x) -> list[features]`` and ``decode(features) -> logits`` so that the feature-perturbation
forward (:meth:`forward_fp`) runs the encoder once on ``cat(A, U)``, applies a weak and a strong channel dropout to
every feature level of the U half, and decodes ``cat(A, U, U_weak, U_strong)`` in ONE batched decoder pass.

``forward(x)`` always returns one tensor (the logits), which is what ``verify_net_in_out``, TorchScript export and
MONAI Label expect. Training-only streams come from :meth:`forward_fp`.

Built-in dropout (the V-Net bottleneck/head ``Dropout3d(0.5)``, the U-Net encoder dropouts) can be restricted to a
subset of the batch rows with ``noisy_rows`` (a boolean vector); this is how the trainer keeps the teacher flow free
of dropout noise while the student rows keep their regularisation (see ``docs/README.md``, "teacher mode").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VNet", "UNet2D", "rowwise", "width_from_checkpoint"]


def width_from_checkpoint(ckpt_path: str, default: int = 16, key: str = "block_one.0.weight") -> int:
    """The V-Net width (``n_filters``) of the weights in ``ckpt_path``; ``default`` when the file does not exist.

    Inference and evaluation configs use it so that weights trained at another width (the demo's 8 filters) load
    without extra overrides. Accepts ``{"model": state_dict}`` (the bundle's format) and plain state dicts.

    Raises:
        ValueError: the file exists but holds no V-Net weights.
    """
    if not os.path.isfile(ckpt_path):
        return int(default)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    weight = state.get(key) if isinstance(state, dict) else None
    if weight is None:
        raise ValueError(f"{ckpt_path} holds no V-Net weights (no '{key}'); is it a checkpoint of this bundle's LA network?")
    return int(weight.shape[0])


def rowwise(module: nn.Module, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Apply ``module`` (a dropout layer) to the rows of ``x`` selected by ``rows`` only.

    Args:
        module: the layer to apply (typically ``nn.Dropout``/``nn.Dropout3d``).
        x: a batch ``(B, C, ...)``.
        rows: boolean ``(B,)`` selecting the rows that get the layer; ``None`` means all rows.

    Returns:
        ``module(x)`` on the selected rows, ``x`` elsewhere.
    """
    if rows is None or not module.training:
        return module(x)
    if not bool(rows.any()):
        return x
    if bool(rows.all()):
        return module(x)
    sel = rows.to(device=x.device).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(sel, module(x), x)


def _fp_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Channel dropout (Dropout2d/3d semantics: a whole channel of a sample is zeroed, the rest scaled 1/(1-p))."""
    if p <= 0.0:
        return x
    shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
    keep = torch.rand(shape, device=x.device, generator=generator) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class _FPMixin(nn.Module):
    """The feature-perturbation forward shared by both networks (CrossMatch ``need_fp=True``)."""

    def encode(self, x: torch.Tensor, noisy_rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        raise NotImplementedError

    def decode(self, features: Sequence[torch.Tensor], head_dropout: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def perturb(self, features: Sequence[torch.Tensor], p: float) -> list[torch.Tensor]:
        """Channel dropout with probability ``p`` on every feature level (always active, as in the reference)."""
        return [_fp_dropout(f, p) for f in features]

    def forward_fp(
        self,
        x_a: torch.Tensor,
        x_u: torch.Tensor,
        noisy_a: bool = True,
        noisy_u: bool = True,
        weak: float | None = None,
        strong: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature-perturbation forward: encoder once on ``cat(A, U)``, decoder once on ``cat(A, U, U_w, U_s)``.

        Args:
            x_a: the A half (labelled images, or the first strong view).
            x_u: the U half, whose features get the weak and strong channel dropout.
            noisy_a: whether the network's built-in dropout applies to the A rows.
            noisy_u: whether the network's built-in dropout applies to the U rows.
            weak: weak dropout probability (default ``self.fp_weak``, 0.25).
            strong: strong dropout probability (default ``self.fp_strong``, 0.75).

        Returns:
            ``(logits_a, logits_u, logits_u_weak, logits_u_strong)``.
        """
        weak = self.fp_weak if weak is None else weak
        strong = self.fp_strong if strong is None else strong
        n_a, n_u = x_a.shape[0], x_u.shape[0]
        x = torch.cat((x_a, x_u))
        rows = None
        if not (noisy_a and noisy_u):
            rows = torch.tensor([noisy_a] * n_a + [noisy_u] * n_u, dtype=torch.bool)
        feats = self.encode(x, noisy_rows=rows)
        u_feats = [f[n_a:] for f in feats]
        u_weak = self.perturb(u_feats, weak)
        u_strong = self.perturb(u_feats, strong)
        stacked = [torch.cat((f, w, s)) for f, w, s in zip(feats, u_weak, u_strong)]
        out = self.decode(stacked, head_dropout=False)
        return out[:n_a], out[n_a : n_a + n_u], out[n_a + n_u : n_a + 2 * n_u], out[n_a + 2 * n_u :]


# --------------------------------------------------------------------------------------------- V-Net (LA)


def _conv_stage(n_stages: int, c_in: int, c_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_stages):
        layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 2, stride=2), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose3d(c_in, c_out, 2, stride=2), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class VNet(_FPMixin):
    """The UA-MT / CrossMatch V-Net with batch norm and additive skips (9,448,866 parameters for 1 in, 2 out).

    Args:
        in_channels: input channels (1 for LA).
        out_channels: classes (2 for LA).
        n_filters: width of the first stage (16).
        has_dropout: add ``Dropout3d(0.5)`` on the bottleneck (inside the encoder) and before the head (train only).
        fp_weak: weak feature-perturbation dropout (0.25).
        fp_strong: strong feature-perturbation dropout (0.75).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        has_dropout: bool = False,
        fp_weak: float = 0.25,
        fp_strong: float = 0.75,
    ) -> None:
        super().__init__()
        f = n_filters
        self.has_dropout = has_dropout
        self.fp_weak, self.fp_strong = fp_weak, fp_strong
        self.block_one = _conv_stage(1, in_channels, f)
        self.block_one_dw = _down(f, 2 * f)
        self.block_two = _conv_stage(2, 2 * f, 2 * f)
        self.block_two_dw = _down(2 * f, 4 * f)
        self.block_three = _conv_stage(3, 4 * f, 4 * f)
        self.block_three_dw = _down(4 * f, 8 * f)
        self.block_four = _conv_stage(3, 8 * f, 8 * f)
        self.block_four_dw = _down(8 * f, 16 * f)
        self.block_five = _conv_stage(3, 16 * f, 16 * f)
        self.block_five_up = _up(16 * f, 8 * f)
        self.block_six = _conv_stage(3, 8 * f, 8 * f)
        self.block_six_up = _up(8 * f, 4 * f)
        self.block_seven = _conv_stage(3, 4 * f, 4 * f)
        self.block_seven_up = _up(4 * f, 2 * f)
        self.block_eight = _conv_stage(2, 2 * f, 2 * f)
        self.block_eight_up = _up(2 * f, f)
        self.block_nine = _conv_stage(1, f, f)
        self.out_conv = nn.Conv3d(f, out_channels, 1)
        self.dropout = nn.Dropout3d(p=0.5)

    def encode(self, x: torch.Tensor, noisy_rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Encoder: the five feature levels ``[x1, x2, x3, x4, x5]`` (x5 = bottleneck, after dropout if enabled)."""
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout:
            if torch.jit.is_scripting() or noisy_rows is None:
                x5 = self.dropout(x5)
            else:
                x5 = rowwise(self.dropout, x5, noisy_rows)
        return [x1, x2, x3, x4, x5]

    def decode(self, features: list[torch.Tensor], head_dropout: bool = True) -> torch.Tensor:
        """Decoder with additive skips; ``head_dropout`` applies the head ``Dropout3d`` when ``has_dropout``."""
        x1, x2, x3, x4, x5 = features
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x = self.block_nine(self.block_eight_up(x) + x1)
        if self.has_dropout and head_dropout:
            x = self.dropout(x)
        return self.out_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W, D)``; spatial sizes must be multiples of 16."""
        return self.decode(self.encode(x))


# ------------------------------------------------------------------------------------------ U-Net 2D (ACDC)


class _UConv(nn.Module):
    """conv3x3-BN-LeakyReLU, Dropout(p), conv3x3-BN-LeakyReLU (the SSL4MIS ``ConvBlock``)."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU())
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU())

    def forward(self, x: torch.Tensor, noisy_rows: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv1(x)
        if torch.jit.is_scripting() or noisy_rows is None:
            x = self.drop(x)
        else:
            x = rowwise(self.drop, x, noisy_rows)
        return self.conv2(x)


class _UUp(nn.Module):
    """ConvTranspose2d(k2, s2) up-sampling, concatenation with the skip, then a dropout-free conv block."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_skip, 2, stride=2)
        self.conv = _UConv(2 * c_skip, c_out, 0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet2D(_FPMixin):
    """The SSL4MIS / CrossMatch 2D U-Net (widths 16-256, encoder dropouts 0.05-0.5; 1,944,324 parameters, 4 classes).

    Args:
        in_channels: input channels (1).
        out_channels: classes (4 for ACDC).
        features: the five widths.
        dropout: the five encoder dropout probabilities (element-wise ``nn.Dropout`` as in the reference).
        fp_weak: weak feature-perturbation ``Dropout2d`` probability (0.25).
        fp_strong: strong feature-perturbation ``Dropout2d`` probability (0.75).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        fp_weak: float = 0.25,
        fp_strong: float = 0.75,
    ) -> None:
        super().__init__()
        ft = list(features)
        self.fp_weak, self.fp_strong = fp_weak, fp_strong
        self.enc = nn.ModuleList(
            [_UConv(in_channels, ft[0], dropout[0])] + [_UConv(ft[i - 1], ft[i], dropout[i]) for i in range(1, 5)]
        )
        self.dec = nn.ModuleList([_UUp(ft[i], ft[i - 1], ft[i - 1]) for i in range(4, 0, -1)])
        self.out_conv = nn.Conv2d(ft[0], out_channels, 3, padding=1)

    def encode(self, x: torch.Tensor, noisy_rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Encoder: five levels (full resolution down to 1/16)."""
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self.enc):
            feats.append(block(x if i == 0 else F.max_pool2d(feats[-1], 2), noisy_rows))
        return feats

    def decode(self, features: list[torch.Tensor], head_dropout: bool = True) -> torch.Tensor:
        """Decoder (``head_dropout`` is accepted for interface symmetry; the U-Net has no head dropout)."""
        x = features[4]
        for i, block in enumerate(self.dec):
            x = block(x, features[3 - i])
        return self.out_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)``; spatial sizes must be multiples of 16."""
        return self.decode(self.encode(x))
