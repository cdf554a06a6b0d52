# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Deterministic synthetic 2D ultrasound phantoms: the default data of the 2D ultrasound bundles.

The generator writes the project's prepared dataset format (``docs/dataset_format.md`` of the
repository): ``images/<id>.png`` (8-bit grey), ``labels/<id>.png`` (class indices 0/1) and a
``datalist.json`` holding the ``labeled``, ``unlabeled``, ``validation`` and ``test`` lists (and, under
``lesion_kinds``, each labelled, validation and test image's lesion kind, ``"none"`` without a lesion).

Each image is drawn from its own random generator seeded by ``(seed, split, index)``, so an image
depends only on the seed, its split and its position in that split: changing the number of
unlabelled images does not change the test set. The image model, in order:

1. tissue echogenicity: a smooth random texture at two scales plus a few wavy horizontal layers
   (skin / fat / muscle-like interfaces near the transducer);
2. one lesion per image (a few images have none, at most about 4 %): a star-shaped blob with a
   lobulated boundary (an ellipse deformed by low-order Fourier terms, plus high-order terms for
   "irregular" lesions), mean diameter 6-25 % of the image width, of one of three kinds:
   hypoechoic solid (darker than tissue, half of them with posterior acoustic shadowing),
   anechoic cyst (very dark, posterior acoustic enhancement) or hyperechoic (brighter, textured),
   drawn with probabilities 0.55 / 0.15 / 0.30. The labelled split is stratified (as one picks the
   cases to annotate): image ``j``'s kind comes from a golden-ratio sequence over those proportions,
   so every prefix of it holds each kind in about its proportion (the kinds of 16 labelled images: 9 / 2 / 5).
   The other splits draw the kind at random;
3. fully developed speckle: the envelope of spatially correlated complex Gaussian noise
   (Rayleigh distributed, larger lateral than axial correlation), applied multiplicatively;
4. depth attenuation (exponential in the row index) and, optionally, a sector (fan) mask;
5. power-law compression, mild Gaussian blur, 8-bit quantisation.

The lesion keeps a clear mean-intensity contrast with the surrounding tissue (a small U-Net
learns it) while speckle, shadows and soft edges keep it from being trivial.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["PHANTOM_VERSION", "ensure_phantom_dataset", "generate_phantom_dataset", "render_phantom", "stratified_kind"]

logger = logging.getLogger(__name__)

#: bumped whenever the image model changes (recorded in ``datalist.json``'s ``source``); a generated dataset of
#: another version is regenerated on first use. Version 2: stratified lesion kinds in the labelled split (version 1
#: drew them at random, which gave the default 16 labelled images two hyperechoic lesions against seven of the 24
#: test images, so the demo's test Dice hinged on those two).
PHANTOM_VERSION = 2

_SPLITS = ("labeled", "unlabeled", "validation", "test")
_NO_LESION_PROBABILITY = 0.04
_KINDS = ("hypoechoic", "cyst", "hyperechoic")
_KIND_PROBABILITIES = (0.55, 0.15, 0.30)
_KIND_CDF = np.cumsum(_KIND_PROBABILITIES)
_GOLDEN = (5**0.5 - 1) / 2


def stratified_kind(index: int) -> str:
    """The lesion kind of labelled image ``index``: a low-discrepancy draw over the kind proportions.

    ``u = frac(0.5 + index * (sqrt(5) - 1) / 2)`` is mapped through the cumulative kind probabilities, so
    the first ``n`` labelled images hold each kind in about its proportion for every ``n``, and an image's
    kind depends on its position only.
    """
    u = (0.5 + int(index) * _GOLDEN) % 1.0
    return _KINDS[int(np.searchsorted(_KIND_CDF, u, side="right"))]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation.

    Wide kernels are applied on a coarser grid and interpolated back (same look, much faster).
    """
    factor = max(1, int(sigma // 3))
    coarse = tuple(-(-n // factor) + 2 for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma=sigma / factor, mode="reflect")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1, mode="nearest")
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-8)


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth tissue echogenicity map (positive, mean about 1)."""
    rows = np.arange(size, dtype=np.float64)[:, None] / size
    cols = np.arange(size, dtype=np.float64)[None, :] / size
    echo = 1.0 + 0.15 * _smooth_noise(rng, (size, size), size / 12) + 0.08 * _smooth_noise(rng, (size, size), size / 40)
    # a few wavy layer interfaces in the near field, each a bright or dark band
    depth = 0.03
    for _ in range(int(rng.integers(2, 5))):
        depth += rng.uniform(0.04, 0.09)
        wave = depth + rng.uniform(0.003, 0.015) * np.sin(2 * np.pi * (rng.uniform(0.5, 2.0) * cols + rng.uniform()))
        band = np.exp(-0.5 * ((rows - wave) / rng.uniform(0.004, 0.012)) ** 2)
        echo += rng.choice([-1.0, 1.0], p=[0.3, 0.7]) * rng.uniform(0.2, 0.45) * band
    return np.clip(echo, 0.3, None)


def _sector_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fan-shaped field of view with its apex above the image's top centre."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    apex_row = -rng.uniform(0.15, 0.3) * size
    radius = np.hypot(rows - apex_row, cols - size / 2)
    angle = np.arctan2(cols - size / 2, rows - apex_row)
    half_angle = np.deg2rad(rng.uniform(32.0, 40.0))
    inner = -apex_row + 0.02 * size
    outer = -apex_row + rng.uniform(0.98, 1.08) * size
    return (np.abs(angle) <= half_angle) & (radius >= inner) & (radius <= outer)


def _lesion_mask(rng: np.random.Generator, size: int, diameter: float, irregular: bool) -> tuple[np.ndarray, float]:
    """A random star-shaped lesion mask and its maximum radius in pixels.

    The boundary is ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))`` in the frame of a
    rotated ellipse, which keeps the region star-shaped around its centre.
    """
    r0 = diameter / 2
    aspect = rng.uniform(0.55, 1.0)
    ax, ay = (1.0, aspect) if rng.uniform() < 0.7 else (aspect, 1.0)  # mostly wider than tall
    orders = np.arange(2, 7)
    amps = rng.uniform(0.0, 0.22, size=orders.size) / orders**0.7
    phases = rng.uniform(0, 2 * np.pi, size=orders.size)
    if irregular:
        high = np.arange(7, 15)
        orders = np.concatenate([orders, high])
        amps = np.concatenate([amps, rng.uniform(0.0, 0.06, size=high.size)])
        phases = np.concatenate([phases, rng.uniform(0, 2 * np.pi, size=high.size)])
    theta_grid = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius_profile = 1 + (amps[:, None] * np.cos(orders[:, None] * theta_grid[None] + phases[:, None])).sum(0)
    r_max = r0 * max(ax, ay) * float(radius_profile.max())
    margin = r_max + 2
    cy = rng.uniform(max(margin, 0.22 * size), min(size - margin, 0.78 * size))
    cx = rng.uniform(max(margin, 0.15 * size), min(size - margin, 0.85 * size))
    rot = rng.uniform(0, np.pi)
    # evaluate the boundary only inside the lesion's bounding square
    r0_row, r1_row = max(0, int(cy - margin)), min(size, int(np.ceil(cy + margin)))
    r0_col, r1_col = max(0, int(cx - margin)), min(size, int(np.ceil(cx + margin)))
    rows, cols = np.mgrid[r0_row:r1_row, r0_col:r1_col].astype(np.float64) + 0.5
    du, dv = cols - cx, rows - cy
    u = (np.cos(rot) * du + np.sin(rot) * dv) / ax
    v = (-np.sin(rot) * du + np.cos(rot) * dv) / ay
    theta = np.arctan2(v, u)
    profile = 1 + (amps[:, None, None] * np.cos(orders[:, None, None] * theta[None] + phases[:, None, None])).sum(0)
    mask = np.zeros((size, size), dtype=bool)
    mask[r0_row:r1_row, r0_col:r1_col] = np.hypot(u, v) < r0 * np.clip(profile, 0.4, None)
    return mask, r_max


def _speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rayleigh-distributed multiplicative speckle with unit mean (correlated like a PSF)."""
    sigma = (rng.uniform(0.7, 1.1), rng.uniform(1.4, 2.2))  # (axial, lateral) correlation in pixels
    re = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    im = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    envelope = np.hypot(re, im)
    return envelope / envelope.mean()


def render_phantom(
    rng: np.random.Generator, size: int = 256, sector: bool = False, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one phantom image and its label.

    Args:
        rng: the image's own random generator (the only source of randomness).
        size: image side in pixels.
        sector: whether to apply a fan-shaped field-of-view mask.
        kind: the lesion kind (``"hypoechoic"``, ``"cyst"`` or ``"hyperechoic"``), or None to draw it at
            random. The lesion can still be absent (about 4 % of images) either way.

    Returns:
        ``(image, label)``: ``uint8`` arrays of shape ``(size, size)`` in row (depth), column order;
        the label holds 0 (background) and 1 (lesion).
    """
    image, label, _ = _render(rng, size, sector, kind)
    return image, label


def _render(
    rng: np.random.Generator, size: int, sector: bool, kind: str | None
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """:func:`render_phantom`, also returning the lesion kind drawn (None for an image without a lesion)."""
    echo = _tissue(rng, size)
    shading = np.ones((size, size))
    fov = _sector_mask(rng, size) if sector else np.ones((size, size), dtype=bool)
    label = np.zeros((size, size), dtype=np.uint8)

    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS} or None, got {kind!r}")
    drawn = None
    if rng.uniform() >= _NO_LESION_PROBABILITY:
        if kind is None:
            kind = str(rng.choice(_KINDS, p=_KIND_PROBABILITIES))
        drawn = kind
        irregular = kind == "hypoechoic" and rng.uniform() < 0.5
        diameter = rng.uniform(0.14, 0.32) * size
        for _ in range(20):  # inside the field of view
            mask, _ = _lesion_mask(rng, size, diameter, irregular)
            if (mask & fov).sum() >= 0.98 * mask.sum():
                break
        mask &= fov
        label[mask] = 1
        soft = ndimage.gaussian_filter(mask.astype(np.float64), sigma=rng.uniform(0.6, 1.4))
        if kind == "hypoechoic":
            factor = rng.uniform(0.12, 0.3) * (1 + 0.1 * _smooth_noise(rng, (size, size), 4.0))
        elif kind == "cyst":
            factor = np.full((size, size), rng.uniform(0.06, 0.14))
        else:
            factor = rng.uniform(2.4, 3.2) * (1 + 0.15 * _smooth_noise(rng, (size, size), 3.0))
        echo = echo * (1 + soft * (factor - 1))
        # posterior effects: columns below the lesion, onset at its top edge
        below = ndimage.gaussian_filter(np.maximum.accumulate(soft, axis=0), sigma=(3.0, 2.5))
        if kind == "hypoechoic" and rng.uniform() < 0.5:
            shading *= 1 - rng.uniform(0.35, 0.6) * below
        elif kind == "cyst":
            shading *= 1 + rng.uniform(0.25, 0.5) * below

    depth = np.arange(size, dtype=np.float64)[:, None] / size
    shading *= np.exp(-rng.uniform(0.5, 1.1) * depth)
    envelope = echo * shading * _speckle(rng, size)
    gain = rng.uniform(0.36, 0.46)
    image = np.clip(gain * envelope, 0, None) ** 0.65
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.4, 0.8))
    image = np.clip(image * 255.0 * rng.uniform(0.75, 0.95), 0, 255) * fov
    return np.round(image).astype(np.uint8), label, drawn


def _write_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array, mode="L").save(path, format="PNG")


def generate_phantom_dataset(
    output_dir: str | os.PathLike,
    num_labeled: int = 16,
    num_unlabeled: int = 96,
    num_validation: int = 16,
    num_test: int = 24,
    size: int = 256,
    seed: int = 0,
    sector: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a phantom dataset in the prepared dataset format.

    Args:
        output_dir: dataset folder to create (``images/``, ``labels/``, ``datalist.json``).
        num_labeled: labelled training images.
        num_unlabeled: unlabelled training images (no label file is written for them).
        num_validation: validation images (with labels).
        num_test: test images (with labels).
        size: image side in pixels (images are square).
        seed: the dataset seed; image ``j`` of split ``s`` uses ``SeedSequence([seed, s, j])``.
        sector: apply a fan-shaped (curvilinear probe) field-of-view mask.
        overwrite: replace an existing phantom dataset in ``output_dir``. A folder holding
            anything else is never touched.

    Returns:
        The dataset folder.

    Raises:
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is false, or it holds a
            dataset that is not a phantom.
        ValueError: a negative count, or a size below 32.
    """
    counts = {"labeled": num_labeled, "unlabeled": num_unlabeled, "validation": num_validation, "test": num_test}
    if any(int(n) < 0 for n in counts.values()):
        raise ValueError(f"image counts must be non-negative, got {counts}")
    if size < 32:
        raise ValueError(f"size must be at least 32, got {size}")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace a phantom dataset there")
        datalist = out / "datalist.json"
        source = json.loads(datalist.read_text()).get("source", {}) if datalist.is_file() else {}
        if source.get("format") != "phantom":
            raise FileExistsError(f"{out} does not hold a phantom dataset; refusing to overwrite it")
        for sub in ("images", "labels"):
            shutil.rmtree(out / sub, ignore_errors=True)
        datalist.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)

    lists: dict[str, list[dict[str, Any]]] = {}
    kinds: dict[str, list[str]] = {}  # lesion kind per image of each split but the unlabelled one
    for split_index, split in enumerate(_SPLITS):
        items = []
        for j in range(int(counts[split])):
            case = f"{split}_{j:04d}"
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_index, j]))
            image, label, kind = _render(rng, size, sector, stratified_kind(j) if split == "labeled" else None)
            if split != "unlabeled":
                kinds.setdefault(split, []).append(kind or "none")
            _write_png(image, out / "images" / f"{case}.png")
            item: dict[str, Any] = {"image": f"images/{case}.png"}
            if split != "unlabeled":
                _write_png(label, out / "labels" / f"{case}.png")
                item["label"] = f"labels/{case}.png"
            item["case"] = case
            items.append(item)
        lists[split] = items

    total = sum(int(n) for n in counts.values())
    description = {
        "name": "phantom-us",
        "description": "Synthetic 2D ultrasound phantoms (speckle, one lesion per image) generated by scripts.common.phantom_us",
        "modality": "US",
        "dimensions": 2,
        "labels": {"0": "background", "1": "lesion"},
        "spacing": [0.1, 0.1],
        "spacing_known": True,
        "source": {
            "format": "phantom",
            "generator": "scripts.common.phantom_us",
            "version": PHANTOM_VERSION,
            "seed": int(seed),
            "size": int(size),
            "sector": bool(sector),
        },
        "split": {
            "seed": int(seed),
            "group_by": "case",
            "ratios": {k: (round(int(counts[k]) / total, 4) if total else 0.0) for k in ("labeled", "validation", "test")},
            "counts": {k: int(v) for k, v in counts.items()},
        },
        "lesion_kinds": kinds,
    }
    (out / "datalist.json").write_text(json.dumps({**description, **lists}, indent=2) + "\n")
    logger.info("wrote %d phantom images (%s) to %s", total, ", ".join(f"{k} {v}" for k, v in counts.items()), out)
    return out


def ensure_phantom_dataset(dataset_dir: str | os.PathLike, **kwargs: Any) -> str:
    """Generate the phantom dataset on first use and return its folder.

    Nothing is done when ``dataset_dir/datalist.json`` exists, unless it describes a phantom dataset
    of another :data:`PHANTOM_VERSION`: that one (generated data, never a user's) is regenerated.
    The dataset is written into a temporary sibling folder and renamed into place, so two processes
    calling this at once both end up with one complete dataset (the loser of the rename discards its copy).

    Args:
        dataset_dir: the dataset folder (the bundle's ``dataset_dir``).
        kwargs: passed to :func:`generate_phantom_dataset` (counts, size, seed, sector).

    Returns:
        ``dataset_dir`` as a string (handy as a config expression).

    Raises:
        FileExistsError: ``dataset_dir`` exists, is not empty and has no ``datalist.json``.
    """
    target = Path(dataset_dir)
    if (target / "datalist.json").is_file():
        try:
            source = json.loads((target / "datalist.json").read_text()).get("source", {})
        except (ValueError, AttributeError):  # not a datalist this generator wrote: the data checks report it
            source = {}
        if not isinstance(source, dict) or source.get("format") != "phantom" or source.get("version") == PHANTOM_VERSION:
            logger.info("phantom dataset found at %s; reusing it", target)
            return str(dataset_dir)
        logger.warning("phantom dataset at %s is version %s, this generator writes version %d; regenerating it",
                       target, source.get("version"), PHANTOM_VERSION)
        stale = target.parent / f".{target.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            os.replace(target, stale)
        except FileNotFoundError:  # another process moved it first
            pass
        else:
            shutil.rmtree(stale, ignore_errors=True)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty but has no datalist.json; not writing phantoms there")
    kwargs.pop("overwrite", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("no dataset at %s; generating phantom data (first use)", target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # mkdir (unlike mkdtemp) honours the umask, so the renamed folder gets normal permissions
    try:
        generate_phantom_dataset(tmp, **kwargs)
        try:
            os.replace(tmp, target)  # atomic; replaces only a missing or empty folder
        except OSError:
            if not (target / "datalist.json").is_file():
                raise
            logger.info("another process generated %s first; using its copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dataset_dir)
