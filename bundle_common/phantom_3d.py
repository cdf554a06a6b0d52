# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Deterministic synthetic 3D MRI phantoms: the default data of the volume bundles (NIfTI + ``datalist.json``).

The generator writes the project's prepared dataset format (``docs/dataset_format.md`` of the repository):
``images/<case>.nii.gz``, ``labels/<case>.nii.gz`` (class indices, axes (X, Y, Z), the spacing in the affine) and a
``datalist.json`` holding the ``labeled``, ``unlabeled``, ``validation`` and ``test`` lists (counts:
:data:`PHANTOM_SPLITS`). Case ``i`` is drawn from its own generator seeded by ``seed * 1000 + i``. Two kinds:

- ``kind="la"``: atrium-like 3D MRI volumes: a smooth, irregular blob with a few vein-like tubes leaving it (label 1),
  unlabelled distractor structures, a multiplicative intensity inhomogeneity, Rician-like noise, z-scored per volume,
  0.625 mm isotropic voxels (as LA).
- ``kind="acdc"``: cardiac-like short-axis stacks (about 10 slices of 128x128, 1.5x1.5x8 mm): LV blood pool disc
  (3), myocardium ring (2) and RV crescent (1), whose size and shape vary from base to apex and between subjects;
  intensities in [0, 1] (as the SSL4MIS ACDC preprocessing).

The dataset is generated on first use, atomically (written to a temporary folder, then renamed), so concurrent or
interrupted runs never leave a half-written dataset, and an existing folder is never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["ACDC_SIZE", "LA_SIZE", "PHANTOM_SPLITS", "cardiac_phantom", "ensure_phantom_dataset", "la_phantom",
           "write_phantom_dataset"]

logger = logging.getLogger(__name__)

PHANTOM_SPLITS = {
    "la": {"labeled": 4, "unlabeled": 12, "validation": 2, "test": 4},
    "acdc": {"labeled": 2, "unlabeled": 10, "validation": 2, "test": 4},
}
LA_SIZE = (80, 80, 56)
ACDC_SIZE = (128, 128, 10)


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma: float, amplitude: float) -> np.ndarray:
    """Gaussian-smoothed white noise of ``shape`` (width ``sigma`` voxels), scaled to a peak of ``amplitude``."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f / (np.abs(f).max() + 1e-8) * amplitude


def _tube(shape: Sequence[int], start: np.ndarray, direction: np.ndarray, length: float, radius: float) -> np.ndarray:
    """Voxels within ``radius`` of the segment ``start + t * direction``, ``t in [0, length]``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    rel = grid - start
    t = np.clip(rel @ direction, 0, length)
    closest = start + t[..., None] * direction
    return np.linalg.norm(grid - closest, axis=-1) <= radius


def la_phantom(seed: int, shape: Sequence[int] = LA_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One atrium-like volume ``(image float32 z-scored, label uint8 {0,1})`` of ``shape`` (X, Y, Z).

    Args:
        seed: the seed of the volume's own random generator (the same seed gives the same volume).
        shape: the volume's size (X, Y, Z).

    Returns:
        the image and its label.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = np.array(shape, np.float32) / 2 + rng.uniform(-0.1, 0.1, 3) * np.array(shape)
    radii = np.array(shape, np.float32) * rng.uniform(0.18, 0.28, 3)
    dist = np.sqrt((((grid - centre) / radii) ** 2).sum(-1))
    dist = dist + _smooth_field(rng, shape, 6.0, 0.35)  # irregular outline
    label = dist < 1.0
    # vein-like tubes leaving the blob
    for _ in range(int(rng.integers(2, 5))):
        d = rng.standard_normal(3)
        d[2] *= 0.5
        d /= np.linalg.norm(d)
        start = centre + d * radii * 0.8
        label |= _tube(shape, start, d.astype(np.float32), float(rng.uniform(8, 18)), float(rng.uniform(1.8, 3.2)))
    # unlabelled distractors: a dimmer neighbouring chamber and a bright thin wall-like shell
    other_c = centre + rng.choice([-1, 1], 3) * radii * rng.uniform(1.3, 1.7, 3)
    other = np.sqrt((((grid - other_c) / (radii * 0.8)) ** 2).sum(-1)) < 1.0
    shell = (dist >= 1.0) & (dist < 1.15)
    image = 0.15 + 0.05 * _smooth_field(rng, shape, 3.0, 1.0)
    image = np.where(other & ~label, 0.45, image)
    image = np.where(shell, 0.35, image)
    image = np.where(label, 0.8 + 0.08 * _smooth_field(rng, shape, 2.0, 1.0), image)
    image = ndimage.gaussian_filter(image, 0.8)
    image *= np.exp(_smooth_field(rng, shape, 16.0, 0.3))  # intensity inhomogeneity (bias field)
    noise = 0.08
    image = np.sqrt((image + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)  # Rician
    image = (image - image.mean()) / (image.std() + 1e-8)
    return image.astype(np.float32), label.astype(np.uint8)


def cardiac_phantom(seed: int, shape: Sequence[int] = ACDC_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One cardiac-like short-axis stack ``(image float32 in [0,1], label uint8 {0..3})`` of ``shape`` (H, W, Z).

    Args:
        seed: the seed of the stack's own random generator (the same seed gives the same stack).
        shape: the stack's size (H, W, slices).

    Returns:
        the image and its label (1 right ventricle, 2 myocardium, 3 left ventricle).
    """
    rng = np.random.default_rng(seed)
    h, w, nz = (int(s) for s in shape)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.zeros((h, w, nz), np.float32)
    label = np.zeros((h, w, nz), np.uint8)
    cy, cx = h * rng.uniform(0.42, 0.58), w * rng.uniform(0.42, 0.58)
    r_lv0 = rng.uniform(0.10, 0.15) * min(h, w)
    thick0 = rng.uniform(0.35, 0.5) * r_lv0
    angle = rng.uniform(0, 2 * np.pi)
    body = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2 < 1
    for z in range(nz):
        t = z / max(nz - 1, 1)  # base (0) to apex (1)
        scale = 1.0 - 0.55 * t**1.5
        r_lv = r_lv0 * scale * rng.uniform(0.92, 1.08)
        thick = thick0 * (0.9 + 0.3 * t)
        oy, ox = cy + rng.normal(0, 1.0), cx + rng.normal(0, 1.0)
        ecc = rng.uniform(0.85, 1.15)
        rr = np.sqrt(((yy - oy) / ecc) ** 2 + ((xx - ox) * ecc) ** 2)
        wobble = 1 + 0.06 * np.sin(3 * np.arctan2(yy - oy, xx - ox) + rng.uniform(0, 6))
        lv = rr < r_lv * wobble
        myo = (rr < (r_lv + thick) * wobble) & ~lv
        # RV: a crescent on one side of the septum, shrinking towards the apex
        ry, rx = oy + np.sin(angle) * (r_lv + thick) * 1.15, ox + np.cos(angle) * (r_lv + thick) * 1.15
        r_rv = (r_lv + thick) * rng.uniform(0.9, 1.15) * (1.0 - 0.5 * t)
        rv_disc = np.sqrt((yy - ry) ** 2 + ((xx - rx) * 0.8) ** 2) < r_rv
        rv = rv_disc & ~(rr < (r_lv + thick) * wobble * 1.12) if t < 0.9 else np.zeros_like(lv)
        lab = np.zeros((h, w), np.uint8)
        lab[rv] = 1
        lab[myo] = 2
        lab[lv] = 3
        sl = np.where(body, 0.22, 0.02).astype(np.float32)
        sl += 0.08 * _smooth_field(rng, (h, w), 4.0, 1.0) * body
        sl[rv] = 0.72
        sl[myo] = 0.3
        sl[lv] = 0.85
        sl = ndimage.gaussian_filter(sl, 0.7)
        sl += rng.normal(0, 0.04, (h, w))
        image[..., z], label[..., z] = sl, lab
    image = (image - image.min()) / (image.max() - image.min() + 1e-8)
    return image.astype(np.float32), label


def _save(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    """Save ``array`` as NIfTI with a diagonal affine of ``spacing``."""
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def write_phantom_dataset(dataset_dir: str | os.PathLike, kind: str = "la", splits: dict[str, int] | None = None,
                          seed: int = 0) -> Path:
    """Write a phantom dataset (``images/``, ``labels/``, ``datalist.json``) into ``dataset_dir`` (must not exist).

    Args:
        dataset_dir: the folder to create.
        kind: ``"la"`` (atrium-like volumes) or ``"acdc"`` (cardiac-like short-axis stacks).
        splits: the number of cases per list (default :data:`PHANTOM_SPLITS` of ``kind``).
        seed: the dataset's seed.

    Returns:
        ``dataset_dir`` as a ``Path``.

    Raises:
        ValueError: an unknown ``kind``.
        FileExistsError: ``dataset_dir`` exists.
    """
    if kind not in PHANTOM_SPLITS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {sorted(PHANTOM_SPLITS)}.")
    splits = dict(splits or PHANTOM_SPLITS[kind])
    out = Path(dataset_dir)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    make, spacing = (la_phantom, [0.625] * 3) if kind == "la" else (cardiac_phantom, [1.5, 1.5, 8.0])
    content: dict = {
        "name": f"phantom_{kind}",
        "description": "synthetic atrium-like LGE-MRI volumes" if kind == "la" else "synthetic cardiac cine-MRI short-axis stacks",
        "modality": "MRI",
        "dimensions": 3,
        "labels": {"0": "background", "1": "left atrium"} if kind == "la"
        else {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"},
        "spacing": spacing,
        "spacing_known": True,
        "source": {"format": "phantom", "path": None, "tool": f"scripts.common.phantom_3d.write_phantom_dataset(kind={kind!r})"},
        "split": {"seed": seed, "group_by": "case", "counts": splits},
    }
    index = 0
    for split, count in splits.items():
        items = []
        for _ in range(count):
            case = f"{kind}_{index:03d}"
            image, label = make(seed * 1000 + index)
            _save(out / "images" / f"{case}.nii.gz", image, spacing)
            item = {"image": f"images/{case}.nii.gz", "case": case}
            if split != "unlabeled":
                _save(out / "labels" / f"{case}.nii.gz", label, spacing)
                item["label"] = f"labels/{case}.nii.gz"
            items.append(item)
            index += 1
        content[split] = items
    (out / "datalist.json").write_text(json.dumps(content, indent=2))
    return out


def ensure_phantom_dataset(dataset_dir: str | os.PathLike, kind: str = "la", seed: int = 0) -> Path:
    """Generate the phantom dataset into ``dataset_dir`` unless it already holds a ``datalist.json``.

    Generation is atomic: a temporary sibling folder is written, then renamed; if another process finished first,
    its dataset is kept. An existing non-empty folder without a datalist is never touched.

    Args:
        dataset_dir: the dataset folder.
        kind: ``"la"`` or ``"acdc"`` (:func:`write_phantom_dataset`).
        seed: the dataset's seed.

    Returns:
        ``dataset_dir`` as a ``Path``.

    Raises:
        FileExistsError: ``dataset_dir`` is a non-empty folder without a ``datalist.json``.
    """
    out = Path(dataset_dir)
    if (out / "datalist.json").is_file():
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty but has no datalist.json; refusing to write phantoms into it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    logger.info(f"generating the {kind} phantom dataset in {out} (first use)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp", dir=out.parent))
    try:
        write_phantom_dataset(tmp / "data", kind=kind, seed=seed)
        if out.exists():
            out.rmdir()  # empty folder
        os.rename(tmp / "data", out)
    except OSError:
        if not (out / "datalist.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
