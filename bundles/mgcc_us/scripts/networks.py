# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The MGCC network (Tang et al., arXiv 2305.09447; docs: ALGORITHMS.md 3.1) and its feature perturbations.

A U-Net-like encoder (five conv blocks), three ConvMixer blocks on the bottleneck and four identical decoders
with multi-scale attention gates (MSAG) on the skips. In training mode the auxiliary decoders see the features
taken before, between and after the mixers, each under its own perturbation (the multi-level global context);
in eval mode only the encoder, the three mixers and the main decoder run.

The perturbations draw from torch's random number generator (the global one, or a ``torch.Generator``), never
from numpy (the reference's numpy draw of the FeatureDropout threshold is ALGORITHMS.md 3.6.6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PERTURBATIONS",
    "ConvBlock",
    "ConvMixerBlock",
    "ElementDropout",
    "FeatureDropout",
    "FeatureNoise",
    "MGCCDecoder",
    "MGCCEncoder",
    "MGCCInferenceNet",
    "MGCCNet",
    "MSAG",
    "UpStage",
    "inference_state_dict",
]

#: names of the perturbations :class:`MGCCNet` can put in front of an auxiliary decoder
PERTURBATIONS = ("feature_dropout", "dropout", "feature_noise")


def _draw_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    """Device to draw random numbers on: the generator's if one is given, else the tensor's."""
    return generator.device if generator is not None else x.device


class FeatureDropout(nn.Module):
    """Drop the most activated positions of a feature map (the reference's ``FeatureDropout``).

    Per sample, ``a = mean_c x`` and ``thr = gamma * max(a)``; positions with ``a >= thr`` are zeroed in all
    channels. ``gamma ~ U(gamma_range)`` is drawn once per call, shared by the batch. Active in train and eval
    mode alike (the network applies it only in its training forward).

    Args:
        gamma_range: ``(low, high)`` of the uniform threshold factor; the reference's ``(0.7, 0.9)``.
    """

    def __init__(self, gamma_range: Sequence[float] = (0.7, 0.9)) -> None:
        super().__init__()
        low, high = (float(v) for v in gamma_range)
        if not low <= high:
            raise ValueError(f"gamma_range must be (low, high) with low <= high, got {tuple(gamma_range)}.")
        self.gamma_range = (low, high)

    def draw_gamma(self, generator: torch.Generator | None = None) -> float:
        """One threshold factor ``gamma ~ U(gamma_range)`` (float64 draw on the generator's device or the CPU)."""
        device = generator.device if generator is not None else torch.device("cpu")
        low, high = self.gamma_range
        return float(torch.empty((), dtype=torch.float64, device=device).uniform_(low, high, generator=generator))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        gamma = self.draw_gamma(generator)
        attention = x.mean(dim=1, keepdim=True)
        peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (x.ndim - 1)))
        keep = (attention < peak * gamma).to(x.dtype)
        return x * keep

    def extra_repr(self) -> str:
        return f"gamma_range={self.gamma_range}"


class ElementDropout(nn.Module):
    """Element-wise dropout that is always active (the reference's ``Dropout``: ``F.dropout(x, p)``).

    Zeroes each element with probability ``p`` and scales the survivors by ``1 / (1 - p)``, in train and eval
    mode alike (the network applies it only in its training forward).

    Args:
        p: drop probability; the reference's 0.3.
    """

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}.")
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            return F.dropout(x, self.p, training=True)
        if self.p == 1.0:
            return torch.zeros_like(x)
        keep = torch.empty(x.shape, device=_draw_device(x, generator)).bernoulli_(1.0 - self.p, generator=generator)
        return x * keep.to(x.device, x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeatureNoise(nn.Module):
    """Multiplicative uniform noise ``x + x * n`` (the reference's ``FeatureNoise``).

    ``n ~ U(noise_range)`` has the shape of one sample (``(C, H, W)``) and is shared by the batch; it is drawn
    in float32 and cast to the feature dtype.

    Args:
        noise_range: ``(low, high)`` of the noise; the reference's ``(-0.3, 0.3)``.
    """

    def __init__(self, noise_range: Sequence[float] = (-0.3, 0.3)) -> None:
        super().__init__()
        low, high = (float(v) for v in noise_range)
        if not low <= high:
            raise ValueError(f"noise_range must be (low, high) with low <= high, got {tuple(noise_range)}.")
        self.noise_range = (low, high)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        low, high = self.noise_range
        noise = torch.empty(x.shape[1:], device=_draw_device(x, generator)).uniform_(low, high, generator=generator)
        return x + x * noise.to(x.device, x.dtype).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"noise_range={self.noise_range}"


class ConvBlock(nn.Sequential):
    """(conv3x3 with bias, BN, ReLU) twice: the reference's ``conv_block``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _Residual(nn.Module):
    """``fn(x) + x``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvMixerBlock(nn.Sequential):
    """``depth`` ConvMixer layers of width ``dim``.

    One layer: residual [depthwise conv k x k (bias), GELU, BN], then pointwise conv1x1 (bias), GELU, BN.

    Args:
        dim: channels.
        depth: number of layers; the reference's 3.
        kernel_size: depthwise kernel size (odd); the reference's 7.
    """

    def __init__(self, dim: int, depth: int = 3, kernel_size: int = 7) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}.")
        super().__init__(
            *[
                nn.Sequential(
                    _Residual(
                        nn.Sequential(
                            nn.Conv2d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2),
                            nn.GELU(),
                            nn.BatchNorm2d(dim),
                        )
                    ),
                    nn.Conv2d(dim, dim, kernel_size=1),
                    nn.GELU(),
                    nn.BatchNorm2d(dim),
                )
                for _ in range(depth)
            ]
        )


class MSAG(nn.Module):
    """Multi-scale attention gate (CMUNet, arXiv 2210.13012).

    ``MSAG(x) = x + x * sigmoid(BN(conv1x1(ReLU(cat[BN(conv1x1 x), BN(conv3x3 x), BN(conv3x3 dilation 2 x)]))))``,
    all convolutions with bias.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=1), nn.BatchNorm2d(channels))
        self.ordinary = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.BatchNorm2d(channels))
        self.dilated = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=2, dilation=2), nn.BatchNorm2d(channels)
        )
        self.vote = nn.Sequential(
            nn.Conv2d(3 * channels, channels, kernel_size=1), nn.BatchNorm2d(channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.vote(F.relu(torch.cat([self.pointwise(x), self.ordinary(x), self.dilated(x)], dim=1)))
        return x + x * gate


class UpStage(nn.Module):
    """One decoder stage: ``conv_block(cat[MSAG(skip), ReLU(BN(conv3x3(upsample_nearest_x2(x))))])``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = MSAG(out_channels)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.conv = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.gate(skip), self.up(x)], dim=1))


class MGCCEncoder(nn.Module):
    """Five :class:`ConvBlock` levels with 2x2 max-pooling in between; returns ``[x1, ..., x5]``, finest first."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.blocks = nn.ModuleList([ConvBlock(chans[i], chans[i + 1]) for i in range(len(widths))])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        for block in self.blocks:
            if len(feats) > 0:
                x = self.pool(x)
            x = block(x)
            feats.append(x)
        return feats


class MGCCDecoder(nn.Module):
    """MSAG-gated U-Net decoder on ``[x1, ..., x5]``: four :class:`UpStage` (coarsest first) and a 1x1 head."""

    def __init__(self, widths: Sequence[int], out_channels: int) -> None:
        super().__init__()
        w = list(widths)
        self.stages = nn.ModuleList([UpStage(w[i + 1], w[i]) for i in range(len(w) - 2, -1, -1)])
        self.head = nn.Conv2d(w[0], out_channels, kernel_size=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        n = len(feats)
        for i, stage in enumerate(self.stages):
            x = stage(x, feats[n - 2 - i])
        return self.head(x)


def _mixer_depths(mixer_depth: int | Sequence[int], num_mixers: int) -> list[int]:
    depths = [int(mixer_depth)] * num_mixers if isinstance(mixer_depth, int) else [int(d) for d in mixer_depth]
    if len(depths) != num_mixers:
        raise ValueError(f"mixer_depth needs {num_mixers} values (one per mixer), got {len(depths)}.")
    return depths


class _MGCCEvalPath(nn.Module):
    """Encoder, ConvMixers and main decoder: the modules shared by :class:`MGCCNet` and :class:`MGCCInferenceNet`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        mixer_depth: int | Sequence[int],
        mixer_kernel: int,
        num_mixers: int,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}.")
        self.widths = tuple(width * m for m in (1, 2, 4, 8, 16))
        self.encoder = MGCCEncoder(in_channels, self.widths)
        self.mixers = nn.ModuleList(
            [ConvMixerBlock(self.widths[-1], d, mixer_kernel) for d in _mixer_depths(mixer_depth, num_mixers)]
        )
        self.main_decoder = MGCCDecoder(self.widths, out_channels)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits: encoder, all mixers on ``x5``, main decoder (no perturbation, no auxiliary decoder)."""
        feats = self.encoder(x)
        x5 = feats[-1]
        for mixer in self.mixers:
            x5 = mixer(x5)
        return self.main_decoder(feats[:-1] + [x5])


def inference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of an :class:`MGCCNet` state dict that :class:`MGCCInferenceNet` has (no ``aux_decoders.``)."""
    return {k: v for k, v in state_dict.items() if not k.startswith("aux_decoders.")}


class MGCCInferenceNet(_MGCCEvalPath):
    """The eval path of :class:`MGCCNet` alone (encoder, mixers, main decoder), for export and inference.

    Its parameter names are those of :class:`MGCCNet` without ``aux_decoders.``; :meth:`load_state_dict`
    accepts a full :class:`MGCCNet` state dict (the auxiliary decoders' entries are dropped, also with
    ``strict=True``). ``forward`` always returns one tensor and the module is TorchScript-scriptable.

    Args:
        in_channels: input channels (1 here: grey images; the reference fed 3-channel BGR copies).
        out_channels: output logit channels (1: binary segmentation through a sigmoid).
        width: width of the first level; the levels have ``width * (1, 2, 4, 8, 16)`` channels (reference 64).
        mixer_depth: layers per ConvMixer block, one int for all or one per block (reference 3).
        mixer_kernel: depthwise kernel size of the ConvMixers (reference 7).
        num_mixers: number of ConvMixer blocks (reference 3).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        mixer_depth: int | Sequence[int] = 3,
        mixer_kernel: int = 7,
        num_mixers: int = 3,
    ) -> None:
        super().__init__(in_channels, out_channels, width, mixer_depth, mixer_kernel, num_mixers)
        self.register_load_state_dict_pre_hook(_drop_aux_entries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)


def _drop_aux_entries(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load pre-hook of :class:`MGCCInferenceNet`: forget the auxiliary decoders of a full MGCCNet state dict."""
    for key in [k for k in state_dict if k.startswith(prefix + "aux_decoders.")]:
        del state_dict[key]


class MGCCNet(_MGCCEvalPath):
    """Multi-Level Global Context Cross-Consistency network (ALGORITHMS.md 3.1).

    Training-mode forward (``self.training``) returns ``(main, aux1, aux2, aux3)``, all logits of the input's
    spatial size::

        x1..x5 = encoder(x)
        aux1 = D1(P1([x1..x5]))        # raw x5, before any mixer
        x5 = CM1(x5); aux2 = D2(P2([x1..x5]))
        x5 = CM2(x5); aux3 = D3(P3([x1..x5]))
        x5 = CM3(x5); main = Dmain([x1..x5])   # clean

    with ``P = (FeatureDropout, Dropout 0.3, FeatureNoise)`` by default, each applied to every level with its
    own draw. Eval-mode forward returns only the main logits (encoder, CM1..CM3, main decoder), a single tensor
    as ``verify_net_in_out``, MONAI Label and export expect; the auxiliary decoders never influence it.
    :meth:`inference_network` gives a copy of that path alone (TorchScript/ONNX export, smaller checkpoint).

    The random draws use torch's global generator unless :attr:`generator` is set to a ``torch.Generator``.

    Args:
        in_channels: input channels. 1 here (the project feeds grey images); the reference reads the grey
            ultrasound PNGs with cv2 as 3-channel BGR, i.e. ``in_channels=3`` with three equal channels.
        out_channels: output logit channels (1: binary segmentation through a sigmoid).
        width: width of the first level; the levels have ``width * (1, 2, 4, 8, 16)`` channels. The reference
            uses 64 (64..1024, 122.18M parameters in training, 52.14M in the eval path).
        mixer_depth: layers per ConvMixer block, one int for all or one per block (reference 3).
        mixer_kernel: depthwise kernel size of the ConvMixers (reference 7).
        perturbations: perturbation in front of each auxiliary decoder, in order (aux1 sees the raw bottleneck,
            aux k the bottleneck after k - 1 mixers); names from :data:`PERTURBATIONS`. The number of entries is
            the number of mixers and of auxiliary decoders. Default: the reference HEAD's order (its first
            commit had ``("feature_noise", "dropout", "feature_dropout")``).
        feature_dropout_range: ``gamma`` range of :class:`FeatureDropout` (reference ``(0.7, 0.9)``).
        dropout_p: probability of :class:`ElementDropout` (reference 0.3).
        noise_range: range of :class:`FeatureNoise` (reference ``(-0.3, 0.3)``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        mixer_depth: int | Sequence[int] = 3,
        mixer_kernel: int = 7,
        perturbations: Sequence[str] = PERTURBATIONS,
        feature_dropout_range: Sequence[float] = (0.7, 0.9),
        dropout_p: float = 0.3,
        noise_range: Sequence[float] = (-0.3, 0.3),
    ) -> None:
        perturbations = tuple(perturbations)
        unknown = [p for p in perturbations if p not in PERTURBATIONS]
        if unknown or not perturbations:
            raise ValueError(f"perturbations must be a non-empty sequence of {PERTURBATIONS}, got {perturbations}.")
        super().__init__(in_channels, out_channels, width, mixer_depth, mixer_kernel, len(perturbations))
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "width": width,
            "mixer_depth": mixer_depth if isinstance(mixer_depth, int) else tuple(mixer_depth),
            "mixer_kernel": mixer_kernel,
            "num_mixers": len(perturbations),
        }
        self.aux_decoders = nn.ModuleList([MGCCDecoder(self.widths, out_channels) for _ in perturbations])
        build = {
            "feature_dropout": lambda: FeatureDropout(feature_dropout_range),
            "dropout": lambda: ElementDropout(dropout_p),
            "feature_noise": lambda: FeatureNoise(noise_range),
        }
        self.perturbations = nn.ModuleList([build[name]() for name in perturbations])
        self.perturbation_names = perturbations
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if not self.training:
            return self.predict(x)
        feats = self.encoder(x)
        skips, x5 = feats[:-1], feats[-1]
        aux = []
        for perturb, decoder, mixer in zip(self.perturbations, self.aux_decoders, self.mixers):
            aux.append(decoder([perturb(f, self.generator) for f in (*skips, x5)]))
            x5 = mixer(x5)
        return (self.main_decoder([*skips, x5]), *aux)

    def inference_network(self) -> MGCCInferenceNet:
        """An independent copy of the eval path (encoder, mixers, main decoder) in eval mode, on this net's device.

        Its parameter count excludes the auxiliary decoders (52.14M at ``width=64``) and its forward always
        returns the main logits; weights are copied, so later training of this net does not change it.
        """
        param = next(self.parameters())
        net = MGCCInferenceNet(**self.config).to(device=param.device, dtype=param.dtype)
        net.load_state_dict(inference_state_dict(self.state_dict()))
        return net.eval()
