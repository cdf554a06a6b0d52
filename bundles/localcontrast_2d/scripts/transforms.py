# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Preprocessing and augmentations of Chaitanya et al. 2023 (ALGORITHMS.md 4.2, 4.3) as MONAI transforms.

* :func:`preprocess_transforms`: a whole volume ``(1, X, Y, Z)`` (the project's prepared NIfTI axes, slices along the
  last axis) is scaled by its 1st/99th intensity percentiles, resampled in-plane to a fixed spacing (1.36719 mm for
  ACDC; the through-plane spacing is kept) and centre-cropped or zero-padded to 192 x 192. Labels are always
  resampled nearest-neighbour. N4 bias correction, the reference's first offline step, is not part of it (MONAI has
  no N4 filter; SimpleITK is not a dependency of the project).
* :func:`train_transforms`: the geometric augmentations of a labelled 2D slice ``(1, H, W)``, applied jointly to the
  image and its label (labels nearest): one of five affine options, drawn uniformly, then a random smooth
  deformation (a coarse grid of N(0, sigma) pixel displacements, upsampled bicubically).
* :class:`RandBrightnessContrast` (batches) and :func:`intensity_transforms` (dictionaries): the contrastive
  batch's intensity augmentation, brightness then contrast about each image's mean, then a clip. This project draws
  it per image; the reference's one draw per batch is ``per_image=False``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    Identityd,
    LoadImaged,
    OneOf,
    Rand2DElasticd,
    RandFlipd,
    RandRotated,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandZoomd,
    Resized,
    ResizeWithPadOrCropd,
    Rotated,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    ThresholdIntensityd,
)

__all__ = [
    "ACDC_PIXDIM",
    "ACDC_SPATIAL_SIZE",
    "FITS",
    "KeepOtherItemsSpacingd",
    "RandBrightnessContrast",
    "affine_options",
    "deformation_transform",
    "intensity_transforms",
    "preprocess_transforms",
    "resolve_pixdim",
    "train_transforms",
]

logger = logging.getLogger(__name__)


class KeepOtherItemsSpacingd(Spacingd):
    """MONAI's ``Spacingd`` that leaves the dictionary's other entries alone.

    On a NIfTI volume MONAI's ``Spacingd`` updates every ``<key>_*`` entry as a meta-data dictionary; MONAI Label's
    inference requests carry ``image_path`` (a string), which it cannot update. Such entries that are not
    dictionaries are set aside during the resampling and put back afterwards.
    """

    def __call__(self, data, lazy: bool | None = None) -> dict:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        kept = {k: d.pop(k) for k in list(d) if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)}
        out = super().__call__(d, lazy=lazy)
        out.update(kept)
        return out

ACDC_PIXDIM = (1.36719, 1.36719)
"""The in-plane spacing (mm) the reference resamples ACDC to (Prostate-MD 0.625, MMWHS 1.5)."""

FITS = ("crop", "resize")
"""How :func:`preprocess_transforms` brings a slice to the network's size."""

ACDC_SPATIAL_SIZE = (192, 192)
"""The in-plane size the reference crops or pads ACDC (and Prostate-MD) slices to (MMWHS 160 x 160)."""


def _modes(keys: Sequence[str], image: str, label: str) -> tuple[str, ...]:
    """One interpolation mode per key: ``image`` for the first key, ``label`` for the others (labels are nearest)."""
    return tuple(image if i == 0 else label for i in range(len(keys)))


def preprocess_transforms(
    keys: Sequence[str] = ("image", "label"),
    pixdim: Sequence[float] | None = ACDC_PIXDIM,
    spatial_size: Sequence[int] | None = ACDC_SPATIAL_SIZE,
    lower: float = 1.0,
    upper: float = 99.0,
    clip: bool = False,
    load: bool = True,
    fit: str = "crop",
) -> Compose:
    """The reference's offline preprocessing of a volume (ALGORITHMS.md 4.2), N4 excepted.

    Steps: (load and put the channel first,) scale the image so that its ``lower`` and ``upper`` percentiles over
    the whole volume become 0 and 1 (values beyond stay beyond unless ``clip``), resample in-plane to ``pixdim``
    keeping the slice spacing (image bilinear, labels nearest; MONAI ``Spacingd`` on the affine), then centre crop or
    zero pad in-plane to ``spatial_size`` keeping every slice (``ResizeWithPadOrCropd``). The result's affine (a
    MONAI ``MetaTensor``) places the cropped grid in the source volume's world space, so a label written with it
    (:func:`scripts.pseudo_labels.save_label_volume`) overlays the source image in a viewer.

    Args:
        keys: the image key, then the label key(s); absent keys are skipped (unlabelled items).
        pixdim: the in-plane spacing (mm) to resample to, ``(sx, sy)``; None keeps the native grid (for data whose
            spacing is unknown: the datalist's ``spacing_known: false``).
        spatial_size: the in-plane size ``(H, W)`` to crop or pad to; None keeps the resampled size.
        lower: the percentile mapped to 0 (1 in the reference).
        upper: the percentile mapped to 1 (99 in the reference).
        clip: clip the scaled image to [0, 1]; the reference does not clip.
        load: start by reading the files (``LoadImaged`` + channel first); False for dictionaries that already hold
            channel-first volumes ``(1, X, Y, Z)`` (a ``MetaTensor`` keeps its affine).
        fit: ``"crop"`` (the paper: centre crop or zero pad to ``spatial_size`` after the resampling) or
            ``"resize"`` (resize every slice to ``spatial_size``, image bilinear and labels nearest, without the
            resampling: for data whose spacing is unknown, or to compare with bundles that resize slices).

    Returns:
        a ``Compose`` taking ``{"image": path_or_volume[, "label": ...]}`` to channel-first float32 volumes
        ``(1, H, W, Z)`` (labels hold class indices, float).
    """
    keys = tuple(keys)
    image_key = keys[0]
    steps: list = []
    if load:
        steps.append(LoadImaged(keys=keys, image_only=True, ensure_channel_first=True, allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=True, allow_missing_keys=True))
    steps.append(ScaleIntensityRangePercentilesd(keys=image_key, lower=lower, upper=upper, b_min=0.0, b_max=1.0,
                                                 clip=clip, relative=False, channel_wise=False, dtype=np.float32))
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if fit == "resize":
        if spatial_size is None:
            raise ValueError("fit='resize' needs a spatial_size")
        steps.append(Resized(keys=keys, spatial_size=(int(spatial_size[0]), int(spatial_size[1]), -1),
                             mode=_modes(keys, "bilinear", "nearest"), allow_missing_keys=True))
        steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=True, allow_missing_keys=True))
        return Compose(steps)
    if pixdim is not None:
        if len(pixdim) != 2 or any(float(p) <= 0 for p in pixdim):
            raise ValueError(f"pixdim must be two positive in-plane spacings (mm), got {pixdim!r}")
        # a non-positive component keeps the input's spacing of that axis: the slice spacing is not touched
        steps.append(KeepOtherItemsSpacingd(keys=keys, pixdim=(float(pixdim[0]), float(pixdim[1]), -1.0),
                                            mode=_modes(keys, "bilinear", "nearest"), padding_mode="zeros",
                                            dtype=np.float32, allow_missing_keys=True))
    if spatial_size is not None:
        if len(spatial_size) != 2 or any(int(s) < 1 for s in spatial_size):
            raise ValueError(f"spatial_size must be two positive in-plane sizes, got {spatial_size!r}")
        steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=(int(spatial_size[0]), int(spatial_size[1]), -1),
                                          mode="constant", allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=True, allow_missing_keys=True))
    return Compose(steps)


def affine_options(
    keys: Sequence[str] = ("image", "label"),
    rotate_range: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip_prob: float = 0.5,
    rot45: bool = True,
    identity: bool = True,
) -> OneOf:
    """The reference's affine augmentation of a 2D slice: one option, drawn uniformly (ALGORITHMS.md 4.3).

    The options: a rotation by U(-``rotate_range``, ``rotate_range``) degrees; an isotropic zoom by
    U(``scale_range``) cropped or padded back to the slice size; a left-right flip (the second spatial axis, as
    ``np.fliplr`` on ``(X, Y)``) with probability ``flip_prob``; a rotation by k * 45 degrees, k in {0..7}; no change.
    Rotations pad with zeros (``scipy.ndimage.rotate``'s constant mode). Labels are always nearest.

    Not reproduced: the reference rounds the zoom factor to two decimals, and skips slices whose maximum is under
    0.001 (an empty slice with an empty label is unchanged by any option anyway).

    Args:
        keys: the image key, then the label key(s).
        rotate_range: the small-rotation range in degrees.
        scale_range: the zoom factor range.
        flip_prob: the probability of the flip when the flip option is drawn.
        rot45: include the k * 45 degree rotations.
        identity: include the "no change" option.
    """
    keys = tuple(keys)
    modes = _modes(keys, "bilinear", "nearest")
    options: list = [
        RandRotated(keys=keys, range_x=math.radians(float(rotate_range)), prob=1.0, keep_size=True, mode=modes,
                    padding_mode="zeros", allow_missing_keys=True),
        RandZoomd(keys=keys, prob=1.0, min_zoom=float(scale_range[0]), max_zoom=float(scale_range[1]), keep_size=True,
                  mode=_modes(keys, "bilinear", "nearest-exact"), padding_mode="constant", allow_missing_keys=True),
        RandFlipd(keys=keys, prob=float(flip_prob), spatial_axis=1, allow_missing_keys=True),
    ]
    if rot45:
        options.append(OneOf([Rotated(keys=keys, angle=k * math.pi / 4, keep_size=True, mode=modes,
                                      padding_mode="zeros", allow_missing_keys=True) for k in range(8)]))
    if identity:
        options.append(Identityd(keys=keys, allow_missing_keys=True))
    return OneOf(options)


def deformation_transform(
    keys: Sequence[str] = ("image", "label"),
    spatial_size: Sequence[int] = ACDC_SPATIAL_SIZE,
    prob: float = 0.5,
    sigma: float = 5.0,
    grid: int = 3,
) -> Rand2DElasticd:
    """The reference's random deformation of a 2D slice (ALGORITHMS.md 4.3) as MONAI's ``Rand2DElasticd``.

    The reference draws a ``grid`` x ``grid`` field of N(0, ``sigma``) pixel displacements per axis, upsamples it
    bicubically to the slice size and warps image and one-hot label bilinearly. ``Rand2DElastic`` is the same
    construction: control points ``spatial_size / grid`` pixels apart (plus MONAI's border points) with N(0, 1) *
    ``sigma`` pixel offsets, upsampled bicubically; here the label is warped nearest (the project's rule) and the
    border is extended, as TensorFlow's ``dense_image_warp`` does.

    The reference deforms the images of a batch from a random index k ~ {1..18} on (about half of a batch of 20 on
    average); per slice this is a deformation with probability ``prob`` (0.5).

    Args:
        keys: the image key, then the label key(s).
        spatial_size: the slice size ``(H, W)`` (sets the control point spacing).
        prob: the probability of deforming a slice.
        sigma: the displacements' standard deviation in pixels (5 in the reference's ``--sigma``).
        grid: control points per side over the slice (3 in the reference).
    """
    keys = tuple(keys)
    if int(grid) < 1:
        raise ValueError(f"grid must be a positive number of control points, got {grid!r}")
    spacing = tuple(max(1, round(int(s) / int(grid))) for s in spatial_size)
    return Rand2DElasticd(keys=keys, spacing=spacing, magnitude_range=(float(sigma), float(sigma)), prob=float(prob),
                          mode=_modes(keys, "bilinear", "nearest"), padding_mode="border", allow_missing_keys=True)


def intensity_transforms(
    keys: Sequence[str] | str = "image",
    brightness: float = 0.3,
    contrast: tuple[float, float] = (0.7, 1.3),
    clip_range: tuple[float, float] | None = (0.0, 1.5),
) -> Compose:
    """The contrastive batch's intensity augmentation of one image, drawn per image (ALGORITHMS.md 4.3).

    Adds U(-``brightness``, ``brightness``), then scales about the image's mean by U(``contrast``) (MONAI's
    ``RandScaleIntensityFixedMean``, as TensorFlow's ``adjust_contrast``), then clips to ``clip_range``. For whole
    batches, and for the reference's one draw per batch, use :class:`RandBrightnessContrast`.
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    steps: list = [
        RandShiftIntensityd(keys=keys, offsets=float(brightness), prob=1.0),
        RandScaleIntensityFixedMeand(keys=keys, factors=(float(contrast[0]) - 1.0, float(contrast[1]) - 1.0),
                                     prob=1.0, fixed_mean=True, preserve_range=False),
    ]
    if clip_range is not None:
        lo, hi = float(clip_range[0]), float(clip_range[1])
        steps += [ThresholdIntensityd(keys=keys, threshold=lo, above=True, cval=lo),
                  ThresholdIntensityd(keys=keys, threshold=hi, above=False, cval=hi)]
    return Compose(steps)


def train_transforms(
    keys: Sequence[str] = ("image", "label"),
    spatial_size: Sequence[int] = ACDC_SPATIAL_SIZE,
    rotate_range: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip_prob: float = 0.5,
    rot45: bool = True,
    deform: bool = True,
    deform_prob: float = 0.5,
    deform_sigma: float = 5.0,
    deform_grid: int = 3,
    intensity: bool = False,
    brightness: float = 0.3,
    contrast: tuple[float, float] = (0.7, 1.3),
    clip_range: tuple[float, float] | None = (0.0, 1.5),
) -> Compose:
    """The segmentation batch's augmentation of a labelled (or pseudo-labelled) slice ``(1, H, W)``.

    :func:`affine_options`, then :func:`deformation_transform`, jointly on the image and the label (labels nearest).
    ``intensity`` adds the brightness/contrast augmentation on the image afterwards: the reference intended it for
    this batch but never runs it (ALGORITHMS.md 4.3, 4.7 item 3), hence off by default.

    Args:
        keys: the image key, then the label key(s).
        spatial_size: the slice size (the deformation's control point spacing).
        rotate_range, scale_range, flip_prob, rot45: :func:`affine_options`.
        deform: apply the random deformation.
        deform_prob, deform_sigma, deform_grid: :func:`deformation_transform`.
        intensity: add :func:`intensity_transforms` on the image.
        brightness, contrast, clip_range: :func:`intensity_transforms`.
    """
    keys = tuple(keys)
    steps: list = [affine_options(keys, rotate_range, scale_range, flip_prob, rot45)]
    if deform:
        steps.append(deformation_transform(keys, spatial_size, deform_prob, deform_sigma, deform_grid))
    if intensity:
        steps.append(intensity_transforms(keys[0], brightness, contrast, clip_range))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False, allow_missing_keys=True))
    return Compose(steps)


class RandBrightnessContrast:
    """The contrastive batch's intensity augmentation on a batch of images ``(B, C, H, W)`` (ALGORITHMS.md 4.3).

    ``x + delta``, delta ~ U(-``brightness``, ``brightness``); then ``(x - m) * f + m`` with m the mean of each image
    and channel over its pixels (TensorFlow's ``adjust_contrast``) and f ~ U(``contrast``); then a clip to
    ``clip_range``. With ``per_image`` (this project's default) every image gets its own delta and f; without it,
    one delta and one f serve the whole batch, as the reference's one ``tf.image.random_*`` call per batch half.

    Args:
        brightness: the brightness shift bound (0.3).
        contrast: the contrast factor range (0.7, 1.3).
        clip_range: the clip after both (0, 1.5); None leaves the values unclipped.
        per_image: draw per image (True) or once per call (False, the reference).
        seed: the seed of the augmentation's own ``torch.Generator`` (CPU), for reproducible draws.
    """

    def __init__(
        self,
        brightness: float = 0.3,
        contrast: tuple[float, float] = (0.7, 1.3),
        clip_range: tuple[float, float] | None = (0.0, 1.5),
        per_image: bool = True,
        seed: int | None = 0,
    ) -> None:
        if brightness < 0 or contrast[0] > contrast[1] or contrast[0] < 0:
            raise ValueError(f"brightness must be >= 0 and contrast an increasing range of factors >= 0, got "
                             f"{brightness!r} and {contrast!r}")
        self.brightness = float(brightness)
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.clip_range = None if clip_range is None else (float(clip_range[0]), float(clip_range[1]))
        self.per_image = bool(per_image)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    def set_random_state(self, seed: int) -> RandBrightnessContrast:
        """Reseed the draws; returns ``self``."""
        self.generator.manual_seed(int(seed))
        return self

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` brightness shifts and ``n`` contrast factors (CPU float32)."""
        delta = (torch.rand(n, generator=self.generator) * 2.0 - 1.0) * self.brightness
        lo, hi = self.contrast
        factor = lo + torch.rand(n, generator=self.generator) * (hi - lo)
        return delta, factor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The augmented copy of ``images`` ``(B, C, H, W)`` (any number of trailing spatial axes)."""
        if images.ndim < 3:
            raise ValueError(f"expected a batch (B, C, *spatial), got shape {tuple(images.shape)}")
        b = images.shape[0]
        delta, factor = self.draw(b if self.per_image else 1)
        shape = (-1,) + (1,) * (images.ndim - 1)
        delta = delta.to(images.device, images.dtype).view(shape)
        factor = factor.to(images.device, images.dtype).view(shape)
        x = images + delta
        spatial = tuple(range(2, images.ndim))
        mean = x.mean(dim=spatial, keepdim=True)
        x = (x - mean) * factor + mean
        if self.clip_range is not None:
            x = x.clamp(self.clip_range[0], self.clip_range[1])
        return x


def resolve_pixdim(pixdim: Sequence[float] | None, items: Sequence[dict], fit: str = "crop") -> list[float] | None:
    """The in-plane spacing to resample to: ``pixdim``, or None when the data's spacing is unknown or ``fit`` is
    ``"resize"`` (nothing is resampled then).

    A prepared dataset whose datalist says ``"spacing_known": false`` (the SSL4MIS ACDC files) gives items without
    a ``spacing``; resampling them would assume 1 mm voxels, so they keep their grid, with a warning.
    """
    if pixdim is None or fit == "resize":
        return None
    if items and any("spacing" not in item for item in items):
        logger.warning(f"the dataset does not record its voxel spacing: slices are not resampled to {list(pixdim)} mm "
                       "but cropped or padded as they are (set fit: resize to resize them instead)")
        return None
    return [float(p) for p in pixdim]

