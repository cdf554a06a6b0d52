# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The 6-level 2D U-Net of Chaitanya et al. 2023 with its segmentation head g and contrastive head h.

ALGORITHMS.md 4.1, re-implemented from the TensorFlow reference (``models.py`` / ``layers_bn.py`` of
krishnabits001/pseudo_label_contrastive_training):

* every convolution is conv (with bias unless stated), BatchNorm (eps 1e-3, moving-average decay 0.99, i.e.
  PyTorch ``momentum=0.01``) and ReLU, with TensorFlow ``SAME`` padding;
* encoder: five levels of two 3x3 convolutions (widths ``w, 2w, 4w, 8w, 8w``; the published ``w = 16`` gives
  16, 32, 64, 128, 128), each followed by a 2x2 max-pool, and a sixth level of two 3x3 convolutions at ``8w``;
* decoder: five steps of nearest-neighbour up-sampling x2, a **2x2 convolution** (``SAME`` padding, i.e. one
  zero row/column at the bottom/right), concatenation ``[up, skip]`` and two 3x3 convolutions (one in the last
  step), ending at ``dec_c1_a`` with ``w`` channels at full resolution;
* g (``seg_head``): two conv3x3(w) + BN + ReLU, then conv3x3 to the classes (no bias, no activation);
* h (``cont_head``): conv1x1(w, no bias) + BN + ReLU, then conv1x1 to the embedding width (no bias, no
  normalisation, no activation). The embeddings are **not** L2-normalised here: the loss takes class means of
  the raw embeddings and the cosine similarity normalises afterwards (ALGORITHMS.md 4.4).

Weights are drawn from N(0, 2 / fan_in) (He; the reference calls it "xavier"), biases start at 0, BN at
gamma 1, beta 0. The ACDC network (1 channel, 4 classes, ``w = 16``) has 2,096,304 parameters: encoder/decoder
2,090,480, g 5,280, h 544.

Module names follow the reference: ``encoder[i].a/b`` = ``enc_c{i+1}_a/b``; ``decoder[j].dc`` =
``dec_dc{6-j}``, ``decoder[j].convs.a/b`` = ``dec_c{5-j}_a/b``; ``seg_head.c1_a/c1_b/fin`` =
``seg_c1_a/seg_c1_b/seg_fin_layer``; ``cont_head.c1_a/c1_b`` = ``cont_c1_a/cont_c1_b``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "ConvBNReLU",
    "LocalContrastUNet",
    "UpStep",
    "init_weights",
]

logger = logging.getLogger(__name__)

#: BatchNorm epsilon of the reference
BN_EPS = 1e-3
#: PyTorch BatchNorm momentum equivalent to the reference's moving-average decay 0.99
BN_MOMENTUM = 0.01


def _same_padding(kernel_size: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) of a stride-1 convolution: the odd pixel goes after."""
    total = kernel_size - 1
    return total // 2, total - total // 2


class ConvBNReLU(nn.Sequential):
    """conv(k x k, TensorFlow ``SAME`` padding), optional BatchNorm (eps 1e-3, momentum 0.01), optional ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; an even size pads one more zero at the bottom/right, as TensorFlow.
        bias: whether the convolution has a bias (the reference: yes, except in h and the logit layer).
        norm: whether to apply BatchNorm.
        act: whether to apply ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        norm: bool = True,
        act: bool = True,
    ) -> None:
        before, after = _same_padding(kernel_size)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if before != after:
            layers["pad"] = nn.ZeroPad2d((before, after, before, after))
            padding = 0
        else:
            padding = before
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        if norm:
            layers["bn"] = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        if act:
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(a=ConvBNReLU(in_channels, out_channels), b=ConvBNReLU(out_channels, out_channels)))


class UpStep(nn.Module):
    """One decoder step: nearest up-sampling x2, 2x2 conv + BN + ReLU, concat ``[up, skip]``, 3x3 convs.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the encoder skip.
        out_channels: width of the 2x2 convolution and of the 3x3 convolutions.
        num_convs: number of 3x3 convolutions after the concatenation (2; 1 in the last step).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, num_convs: int = 2) -> None:
        super().__init__()
        if num_convs not in (1, 2):
            raise ValueError(f"num_convs must be 1 or 2, got {num_convs}.")
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.dc = ConvBNReLU(in_channels, out_channels, kernel_size=2)
        convs: OrderedDict[str, nn.Module] = OrderedDict(a=ConvBNReLU(out_channels + skip_channels, out_channels))
        if num_convs == 2:
            convs["b"] = ConvBNReLU(out_channels, out_channels)
        self.convs = nn.Sequential(convs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.dc(self.up(x)), skip], dim=1))


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise as the reference: conv weights N(0, 2 / fan_in), conv biases 0, BN gamma 1 / beta 0 / fresh stats.

    Args:
        module: the module whose convolutions and BatchNorms (at any depth) are re-initialised in place.
        generator: optional random generator for the weight draws (on the weights' device).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # gamma 1, beta 0, running mean 0 / var 1, batch counter 0


class LocalContrastUNet(nn.Module):
    """Chaitanya et al.'s 6-level U-Net with segmentation head g and contrastive head h (ALGORITHMS.md 4.1).

    ``forward(x)`` returns the segmentation logits only (one tensor: what ``verify_net_in_out``, TorchScript /
    ONNX export and MONAI Label run). Training code calls :meth:`forward_train` for logits and embeddings, or
    :meth:`encode`, :meth:`decode`, :meth:`segment` and :meth:`embed` explicitly. :meth:`reset_heads`
    re-initialises g and h while keeping the encoder-decoder (the warm start of the joint training step).

    The spatial size must be a multiple of 32 (five 2x2 poolings; 192 and 160 in the paper).

    Args:
        in_channels: input channels (1 for MRI/CT).
        num_classes: segmentation classes including background (ACDC 4, Prostate 3, MMWHS 8).
        width: base width ``w``; encoder widths ``w, 2w, 4w, 8w, 8w`` and ``8w`` at level 6 (paper 16).
        embed_channels: width of the contrastive embeddings (default ``w``: 16 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        width: int = 16,
        embed_channels: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1:
            raise ValueError(
                f"need in_channels >= 1, num_classes >= 2 and width >= 1, got {in_channels}, {num_classes}, {width}."
            )
        embed = width if embed_channels is None else int(embed_channels)
        if embed < 1:
            raise ValueError(f"embed_channels must be positive, got {embed_channels}.")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.embed_channels = embed
        f = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.features = tuple(f)
        ins = [in_channels, *f]
        # levels 1-5 (followed by a pool) and level 6 (bottleneck, width f[4])
        self.encoder = nn.ModuleList([_double_conv(ins[i], f[i]) for i in range(5)] + [_double_conv(f[4], f[4])])
        self.pool = nn.MaxPool2d(2)
        # step j up-samples to the resolution of encoder level 5 - j and uses its skip f[4 - j]
        self.decoder = nn.ModuleList(
            [UpStep(f[4] if j == 0 else f[5 - j], f[4 - j], f[4 - j], num_convs=1 if j == 4 else 2) for j in range(5)]
        )
        self.seg_head = nn.Sequential(
            OrderedDict(
                c1_a=ConvBNReLU(width, width),
                c1_b=ConvBNReLU(width, width),
                fin=nn.Conv2d(width, num_classes, kernel_size=3, padding=1, bias=False),
            )
        )
        self.cont_head = nn.Sequential(
            OrderedDict(
                c1_a=ConvBNReLU(width, width, kernel_size=1, bias=False),
                c1_b=nn.Conv2d(width, embed, kernel_size=1, bias=False),
            )
        )
        init_weights(self)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the six encoder feature maps (``enc_c1_b`` ... ``enc_c6_b``), finest first."""
        if x.shape[-1] % 32 != 0 or x.shape[-2] % 32 != 0:
            raise ValueError("LocalContrastUNet needs a spatial size that is a multiple of 32 (five 2x2 poolings).")
        feats: list[torch.Tensor] = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Decode the six maps of :meth:`encode` to ``dec_c1_a``: ``(B, width, H, W)``."""
        x = feats[5]
        for j, step in enumerate(self.decoder):
            x = step(x, feats[4 - j])
        return x

    def segment(self, features: torch.Tensor) -> torch.Tensor:
        """Head g: ``dec_c1_a`` features to class logits ``(B, num_classes, H, W)``."""
        return self.seg_head(features)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Head h: ``dec_c1_a`` features to raw (not normalised) embeddings ``(B, embed_channels, H, W)``."""
        return self.cont_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segment(self.decode(self.encode(x)))

    def forward_train(
        self, x: torch.Tensor, seg_rows: slice | None = None, embed_rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder-decoder pass for the whole batch, then both heads (the reference's joint graph).

        As in the reference, g runs on every row (its BatchNorm statistics come from the whole batch) and its
        logits are then restricted to ``seg_rows``; h runs on ``embed_rows`` only (its BatchNorm statistics come
        from those rows). ``None`` means all rows.

        Args:
            x: ``(B, in_channels, H, W)``; the reference stacks 20 labelled and 2 x 10 contrastive slices.
            seg_rows: rows whose logits are returned (e.g. ``slice(0, 20)``).
            embed_rows: rows whose embeddings are computed (e.g. ``slice(20, 40)``).

        Returns:
            ``(logits, embeddings)``: ``(b_seg, num_classes, H, W)`` and ``(b_emb, embed_channels, H, W)``.
        """
        features = self.decode(self.encode(x))
        logits = self.segment(features)
        if seg_rows is not None:
            logits = logits[seg_rows]
        embeddings = self.embed(features if embed_rows is None else features[embed_rows])
        return logits, embeddings

    def heads(self) -> nn.ModuleDict:
        """The two heads as a dict ``{"seg_head": g, "cont_head": h}`` (views of the model's own modules)."""
        return nn.ModuleDict({"seg_head": self.seg_head, "cont_head": self.cont_head})

    def backbone(self) -> nn.ModuleDict:
        """The shared encoder-decoder as a dict ``{"encoder": ..., "decoder": ...}`` (views, not copies)."""
        return nn.ModuleDict({"encoder": self.encoder, "decoder": self.decoder})

    def reset_heads(self, generator: torch.Generator | None = None, reset_backbone_bn_stats: bool = False) -> None:
        """Re-initialise g and h (weights, BN affine and running statistics), keeping the encoder-decoder.

        This is the warm start of the joint training step ("rand_init", ALGORITHMS.md 4.4 step 3 and 4.7.7).

        Args:
            generator: optional random generator for the new head weights.
            reset_backbone_bn_stats: also reset the running mean/variance of the encoder-decoder BatchNorms
                (their gamma/beta are kept). The reference rebuilds its graph and copies only trainable
                variables, so its moving statistics restart; off by default so that validation right after
                the warm start uses the baseline's statistics.
        """
        init_weights(self.heads(), generator)
        if reset_backbone_bn_stats:
            for m in self.backbone().modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
        logger.debug("re-initialised heads g and h (backbone BN statistics reset: %s)", reset_backbone_bn_stats)
