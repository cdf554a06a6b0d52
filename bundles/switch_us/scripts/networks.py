# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The 2D U-Net of the Switch reference (SSL4MIS style) with an optional logit projector."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ConvBlock", "LogitProjector", "UNet2D"]


class ConvBlock(nn.Sequential):
    """conv3x3, BN, LeakyReLU(0.01), Dropout(p), conv3x3, BN, LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01),
        )


class LogitProjector(nn.Sequential):
    """The Switch projector: lifts the class-logit map to ``out_channels`` embeddings at 1/4 resolution.

    conv3x3(C->8), BN, ReLU, maxpool; conv3x3(8->16), BN, ReLU, maxpool; conv1x1(16->out_channels).
    """

    def __init__(self, in_channels: int = 2, hidden: Sequence[int] = (8, 16), out_channels: int = 16) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden[0], kernel_size=3, padding=1),
            nn.BatchNorm2d(hidden[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(hidden[0], hidden[1], kernel_size=3, padding=1),
            nn.BatchNorm2d(hidden[1]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(hidden[1], out_channels, kernel_size=1),
        )


class UNet2D(nn.Module):
    """SSL4MIS-style 2D U-Net used by Switch, BCP and the supervised baseline.

    Encoder levels of widths ``features`` (conv block with elementwise dropout ``dropout[i]``), four 2x2
    max-pools, transposed-convolution up-sampling, concatenation skips and a 3x3 head. With
    ``projector=True`` the model also owns the Switch logit projector (used only through :meth:`project`),
    so an EMA copy of the model carries one too.

    ``forward`` always returns one tensor (the logits), which is what ``verify_net_in_out``, TorchScript /
    ONNX export and MONAI Label expect. Training code calls :meth:`encode`, :meth:`decode` and
    :meth:`project` explicitly.

    Args:
        in_channels: number of input channels.
        out_channels: number of classes.
        features: encoder widths, five levels.
        dropout: dropout probability of each encoder level.
        projector: whether to build the logit projector.
        proj_channels: embedding width of the projector.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        projector: bool = False,
        proj_channels: int = 16,
    ) -> None:
        super().__init__()
        if len(features) != 5 or len(dropout) != 5:
            raise ValueError(f"features and dropout need 5 levels, got {len(features)} and {len(dropout)}.")
        f = list(features)
        self.encoders = nn.ModuleList(
            [ConvBlock(in_channels if i == 0 else f[i - 1], f[i], dropout[i]) for i in range(5)]
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(f[i + 1], f[i], kernel_size=2, stride=2) for i in range(3, -1, -1)])
        self.decoders = nn.ModuleList([ConvBlock(2 * f[i], f[i], 0.0) for i in range(3, -1, -1)])
        self.head = nn.Conv2d(f[0], out_channels, kernel_size=3, padding=1)
        self.projector = LogitProjector(out_channels, out_channels=proj_channels) if projector else None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five encoder feature maps, finest first."""
        feats: list[torch.Tensor] = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Decode the five feature maps of :meth:`encode` to class logits."""
        x = feats[4]
        for j, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            x = dec(torch.cat([feats[3 - j], up(x)], dim=1))
        return self.head(x)

    def project(self, logits: torch.Tensor) -> torch.Tensor:
        """Embed a logit map with the projector (B, C, H, W) -> (B, proj_channels, H/4, W/4)."""
        if self.projector is None:
            raise RuntimeError("this UNet2D was built with projector=False.")
        return self.projector(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
