# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Pseudo-labels of the unlabelled volumes (ALGORITHMS.md 4.4, step 2): slice-wise prediction with a 2D network,
optional dense-CRF refinement, and NIfTI files plus a datalist for the next self-training round.

Axis convention: a volume is channel-first ``(1, H, W, Z)`` (or ``(H, W, Z)``), the project's prepared NIfTI axes
(X, Y, Z) as MONAI's ``LoadImaged`` + channel-first give them, with the 2D slices along the **last** axis (ACDC's
short-axis slices; the reference's ``(X, Y, slices)`` too). Pseudo-labels are computed on the preprocessed grid the
network sees (:func:`scripts.transforms.preprocess_transforms`, 192 x 192 at 1.36719 mm for ACDC), as the reference
does, and written with that grid's affine: a viewer places them on the source image in world space, and the same
preprocessing applied to the pseudo-label file leaves it unchanged, so the next round reads it like a real label.

Files: ``<run_dir>/pseudo_labels/round_<k>/<name>.nii.gz``, one per unlabelled volume, named after the image file
(``patient001_frame01.nii.gz``; two frames of a patient share a ``case`` but not an image name), uint8 class
indices, each written to a temporary file in the same folder and moved into place (``os.replace``), so an
interrupted or failed write never leaves a partial label; ``pseudo_labels.json`` beside them lists the items.

Dense CRF: the reference refines every slice with ``pydensecrf`` (30 mean-field iterations; unary -log softmax; a
Gaussian term sxy 10, compat 30; a bilateral term sxy 0.01, schan 0.5, compat 10 on the intensity image). It is an
optional dependency here: the maintained fork ``pydensecrf2`` (PyPI, a source distribution that compiles with a
C++ compiler) provides the ``pydensecrf`` module; :func:`crf_refine` raises :class:`CRFUnavailableError` naming it
when the refinement is requested without it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from .common.errors import ConfigValueError, DataError

__all__ = [
    "CRF_PACKAGE",
    "CRFSettings",
    "CRFUnavailableError",
    "crf_available",
    "crf_refine",
    "crf_refine_volume",
    "generate_pseudo_labels",
    "predict_volume",
    "pseudo_label_dir",
    "save_label_volume",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

CRF_PACKAGE = "pydensecrf2"
"""The PyPI package that provides the ``pydensecrf`` module (the maintained fork of Lucas Beyer's wrapper)."""

MANIFEST = "pseudo_labels.json"
"""The list of a round's pseudo-labelled items, in the round's folder."""


class CRFUnavailableError(ConfigValueError):
    """Dense-CRF refinement was requested, but the ``pydensecrf`` module (package ``pydensecrf2``) is missing."""


@dataclass
class CRFSettings:
    """The dense CRF of the reference (ALGORITHMS.md 4.4; ``para_list_fin`` of the ACDC/MMWHS runs).

    Args:
        iterations: mean-field iterations (30).
        gaussian_sxy: the Gaussian (smoothness) term's spatial standard deviation in pixels (10; Prostate 5).
        gaussian_compat: its weight (Potts compatibility; 30).
        bilateral_sxy: the bilateral (appearance) term's spatial standard deviation in pixels (0.01: effectively a
            per-pixel intensity term, kept for fidelity; ALGORITHMS.md 4.7 item 6).
        bilateral_schan: its intensity standard deviation, in the preprocessed image's units (0.5).
        bilateral_compat: its weight (10).
    """

    iterations: int = 30
    gaussian_sxy: float = 10.0
    gaussian_compat: float = 30.0
    bilateral_sxy: float = 0.01
    bilateral_schan: float = 0.5
    bilateral_compat: float = 10.0


def crf_available() -> bool:
    """Whether the ``pydensecrf`` module imports."""
    return bool(optional_import("pydensecrf.densecrf")[1] and optional_import("pydensecrf.utils")[1])


def _crf_modules() -> tuple[Any, Any]:
    dcrf, ok = optional_import("pydensecrf.densecrf")
    utils, ok_utils = optional_import("pydensecrf.utils")
    if not (ok and ok_utils):
        raise CRFUnavailableError(
            "dense-CRF refinement of the pseudo-labels needs the pydensecrf module, which is not installed: "
            f"`pip install {CRF_PACKAGE}` (it compiles from source with a C++ compiler), or turn the CRF off "
            "(crf: false)."
        )
    return dcrf, utils


def crf_refine(probs: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor,
               settings: CRFSettings | None = None) -> np.ndarray:
    """The dense-CRF refinement of one slice: the argmax of the CRF posterior.

    Args:
        probs: the softmax of the slice ``(C, H, W)``.
        image: the (preprocessed) intensity slice ``(H, W)`` for the bilateral term.
        settings: the CRF's parameters (the reference's by default).

    Returns:
        the refined label map ``(H, W)``, uint8.

    Raises:
        CRFUnavailableError: the ``pydensecrf`` module is missing.
    """
    dcrf, utils = _crf_modules()
    s = settings or CRFSettings()
    p = np.ascontiguousarray(np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs,
                                        dtype=np.float32))
    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    if p.ndim != 3 or img.shape != p.shape[1:]:
        raise ValueError(f"expected probs (C, H, W) and an image (H, W) of the same size, got {p.shape} and {img.shape}")
    c, h, w = p.shape
    crf = dcrf.DenseCRF2D(w, h, c)  # N = H * W variables, in the C order of (H, W) arrays
    crf.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(p)))
    gauss = utils.create_pairwise_gaussian(sdims=(s.gaussian_sxy, s.gaussian_sxy), shape=(h, w))
    crf.addPairwiseEnergy(gauss, compat=s.gaussian_compat)
    bilateral = utils.create_pairwise_bilateral(sdims=(s.bilateral_sxy, s.bilateral_sxy), schan=(s.bilateral_schan,),
                                                img=img[..., None], chdim=2)
    crf.addPairwiseEnergy(bilateral, compat=s.bilateral_compat)
    q = np.asarray(crf.inference(int(s.iterations)), dtype=np.float32).reshape(c, h, w)
    return q.argmax(axis=0).astype(np.uint8)


def crf_refine_volume(probs: torch.Tensor | np.ndarray, image: torch.Tensor | np.ndarray,
                      settings: CRFSettings | None = None) -> torch.Tensor:
    """:func:`crf_refine` on every slice: ``probs`` ``(C, H, W, Z)`` and ``image`` ``(H, W, Z)`` (or ``(1, H, W, Z)``)
    give the refined labels ``(H, W, Z)`` (uint8 tensor)."""
    _crf_modules()  # fail before any work
    p = torch.as_tensor(probs).detach().cpu()
    img = torch.as_tensor(image).detach().cpu()
    if img.ndim == 4:
        img = img[0]
    out = torch.stack([torch.from_numpy(crf_refine(p[..., z], img[..., z], settings)) for z in range(p.shape[-1])],
                      dim=-1)
    return out


def _logits(output: Any) -> torch.Tensor:
    """The segmentation logits of a network's output: the tensor, the first of a tuple/list, or ``seg``/``pred`` of
    a dictionary."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict):
        for key in ("seg", "pred", "logits"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
    raise TypeError(f"cannot find the segmentation logits in a network output of type {type(output).__name__}; "
                    "pass logits_fn")


@torch.no_grad()
def predict_volume(
    network: torch.nn.Module,
    volume: torch.Tensor | np.ndarray,
    batch_size: int = 20,
    device: torch.device | str | None = None,
    logits_fn: Callable[[Any], torch.Tensor] | None = None,
    return_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The argmax of the softmax of a 2D ``network`` on every slice of ``volume``.

    Args:
        network: a 2D network taking ``(B, 1, H, W)``; it runs in eval mode (running BN statistics), and its mode is
            restored afterwards.
        volume: ``(1, H, W, Z)`` (channel first, slices along the last axis) or ``(H, W, Z)``.
        batch_size: slices per forward pass (20 in the reference).
        device: where the network runs (default: the device of its parameters).
        logits_fn: the segmentation logits of the network's output (default: the output tensor, the first element of
            a tuple, or the ``seg``/``pred``/``logits`` entry of a dictionary).
        return_probs: also return the softmax ``(C, H, W, Z)`` (float32, on the CPU), e.g. for :func:`crf_refine`.

    Returns:
        the labels, uint8, with the layout of ``volume`` (``(1, H, W, Z)`` or ``(H, W, Z)``) on the CPU; with
        ``return_probs``, ``(labels, probs)``.
    """
    vol = torch.as_tensor(volume)
    vol = vol.as_tensor() if hasattr(vol, "as_tensor") else vol  # a plain tensor, without MONAI meta data
    if vol.ndim == 4:
        if vol.shape[0] != 1:
            raise ValueError(f"expected one channel (1, H, W, Z), got shape {tuple(vol.shape)}")
        spatial = vol[0]
    elif vol.ndim == 3:
        spatial = vol
    else:
        raise ValueError(f"expected a volume (1, H, W, Z) or (H, W, Z), got shape {tuple(vol.shape)}")
    if device is None:
        param = next(network.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    slices = spatial.permute(2, 0, 1).unsqueeze(1).float()  # (Z, 1, H, W)
    extract = logits_fn or _logits
    was_training = network.training
    network.eval()
    labels, probs = [], []
    try:
        for start in range(0, slices.shape[0], max(1, int(batch_size))):
            x = slices[start:start + max(1, int(batch_size))].to(device)
            p = torch.softmax(extract(network(x)).float(), dim=1)
            labels.append(p.argmax(dim=1).to(torch.uint8).cpu())
            if return_probs:
                probs.append(p.cpu())
    finally:
        network.train(was_training)
    lab = torch.cat(labels, dim=0).permute(1, 2, 0).contiguous()  # (H, W, Z)
    if vol.ndim == 4:
        lab = lab.unsqueeze(0)
    if return_probs:
        return lab, torch.cat(probs, dim=0).permute(1, 2, 3, 0).contiguous()  # (C, H, W, Z)
    return lab


def _affine_of(volume: Any) -> np.ndarray | None:
    affine = getattr(volume, "affine", None)
    if affine is None:
        return None
    arr = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return arr if arr.shape == (4, 4) else None


def save_label_volume(label: torch.Tensor | np.ndarray, path: str | os.PathLike,
                      affine: np.ndarray | torch.Tensor | None = None) -> Path:
    """Write a label volume as a NIfTI file, atomically: a temporary file in the same folder, then ``os.replace``.

    Args:
        label: ``(1, H, W, Z)`` or ``(H, W, Z)`` class indices (0..255).
        path: the file to write (``.nii.gz`` or ``.nii``); its folder is created.
        affine: the voxel-to-world matrix (4 x 4); default the ``affine`` of ``label`` when it is a MONAI
            ``MetaTensor``, else the identity (with a warning: a viewer will not align it with its image).

    Returns:
        the written path.
    """
    path = Path(path)
    if affine is None:
        affine = _affine_of(label)
        if affine is None:
            logger.warning(f"no affine known for {path}: written with the identity (1 mm voxels at the origin)")
            affine = np.eye(4)
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    arr = torch.as_tensor(label).detach().cpu()
    arr = arr.as_tensor() if hasattr(arr, "as_tensor") else arr
    arr = arr.numpy()
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a label volume (1, H, W, Z) or (H, W, Z), got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"label values must be class indices 0..255, got {arr.min()}..{arr.max()}")
    import nibabel as nib  # noqa: PLC0415

    image = nib.Nifti1Image(np.ascontiguousarray(arr.astype(np.uint8)), affine)
    image.header.set_data_dtype(np.uint8)
    image.header.set_intent("label")
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    return _write_atomic(path, lambda tmp: nib.save(image, tmp), suffix=f".tmp{suffix}")


def _write_atomic(path: Path, write: Callable[[str], Any], suffix: str = ".tmp") -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then ``os.replace`` it onto ``path`` (removed on failure):
    an interrupted or failed write never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    return _write_atomic(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n",
                                                                      encoding="utf-8"))


def pseudo_label_dir(run_dir: str | os.PathLike, round_index: int) -> Path:
    """``<run_dir>/pseudo_labels/round_<k>``: the folder of round ``round_index``'s pseudo-labels."""
    return Path(run_dir) / "pseudo_labels" / f"round_{int(round_index)}"


def _volume_name(item: dict, image_key: str) -> str:
    """The file name (without extension) of an item's pseudo-label: its image file's name."""
    name = Path(str(item[image_key])).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def generate_pseudo_labels(
    network: torch.nn.Module,
    items: Sequence[dict],
    preprocess: Callable[[dict], dict],
    run_dir: str | os.PathLike,
    round_index: int,
    crf: CRFSettings | None = None,
    batch_size: int = 20,
    device: torch.device | str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    logits_fn: Callable[[Any], torch.Tensor] | None = None,
) -> list[dict]:
    """Predict, optionally CRF-refine, and save the pseudo-label of every unlabelled volume; return the next round's
    items.

    Args:
        network: the 2D segmentation network (eval mode during the prediction).
        items: the unlabelled datalist items (absolute ``image`` paths, e.g. from the bundle's ``load_datalist``).
        preprocess: the preprocessing of an item (:func:`scripts.transforms.preprocess_transforms` with ``load``):
            ``{"image": path}`` to ``{"image": (1, H, W, Z) MetaTensor}``.
        run_dir: the run folder; files go to :func:`pseudo_label_dir`.
        round_index: the self-training round whose training reads them (1 for the supervised step's).
        crf: refine every slice with this dense CRF (None: the plain argmax).
        batch_size: slices per forward pass.
        device: where the network runs.
        image_key: the items' image key.
        label_key: the key of the pseudo-label path in the returned items.
        logits_fn: see :func:`predict_volume`.

    Returns:
        copies of ``items`` with ``label_key`` set to the pseudo-label file and ``"pseudo_label_round"`` to
        ``round_index``; the list is also written to ``pseudo_labels.json`` in the round's folder.

    Raises:
        CRFUnavailableError: ``crf`` is given but ``pydensecrf`` is missing (raised before any prediction).
        DataError: two items whose image files share a name.
    """
    if crf is not None:
        _crf_modules()
    out_dir = pseudo_label_dir(run_dir, round_index)
    names: dict[str, str] = {}
    for item in items:
        name = _volume_name(item, image_key)
        if name in names:
            raise DataError(f"two unlabelled images share the file name {name!r}, so their pseudo-labels would "
                            f"overwrite each other: {names[name]} and {item[image_key]}")
        names[name] = str(item[image_key])
    logger.info(f"pseudo-labels of {len(items)} volumes (round {round_index}{', dense CRF' if crf else ''}) "
                f"-> {out_dir}")
    result = []
    for item in items:
        data = preprocess({image_key: item[image_key]})
        image = data[image_key]
        if crf is None:
            labels = predict_volume(network, image, batch_size, device, logits_fn)
        else:
            _, probs = predict_volume(network, image, batch_size, device, logits_fn, return_probs=True)
            labels = crf_refine_volume(probs, image, crf)
        path = save_label_volume(labels, out_dir / f"{_volume_name(item, image_key)}.nii.gz", _affine_of(image))
        result.append({**item, label_key: str(path), "pseudo_label_round": int(round_index)})
    write_json_atomic({"round": int(round_index), "crf": asdict(crf) if crf is not None else None,
                       "pseudo_labeled": result}, out_dir / MANIFEST)
    return result
