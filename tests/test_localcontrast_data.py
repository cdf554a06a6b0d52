# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Data pieces of the localcontrast_2d bundle: the preprocessing (percentile scaling, in-plane resampling, crop/pad),
the joint geometric augmentations, the per-image intensity augmentation, and the pseudo-labels (slice-wise
prediction, NIfTI files written atomically with the source affine, the optional dense CRF)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import import_bundle

SHAPE = (32, 32, 8)
SPACING = (1.5, 1.5, 5.0)


@pytest.fixture
def tfm():
    """``scripts.transforms`` of the localcontrast_2d bundle (the bundles share the package name ``scripts``)."""
    import_bundle("localcontrast_2d")
    return importlib.import_module("scripts.transforms")


@pytest.fixture
def pl():
    """``scripts.pseudo_labels`` of the localcontrast_2d bundle."""
    import_bundle("localcontrast_2d")
    return importlib.import_module("scripts.pseudo_labels")


def _affine(spacing=SPACING, origin=(-20.0, 10.0, 3.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (32, 32, 8) image with a bright square (class 2) and a grey bar (class 1) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    img = (rng.random(SHAPE) * 40.0).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    img[8:20, 10:22] = 400.0
    lab[8:20, 10:22] = 2
    img[24:28, 4:28] = 200.0
    lab[24:28, 4:28] = 1
    return img, lab


def _write(path: Path, arr: np.ndarray, affine: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return str(path)


class ThresholdNet(torch.nn.Module):
    """A fixed network: class 0 below ~0.3, class 1 in between, class 2 above ~0.7 (with a BatchNorm layer whose
    mode shows whether the prediction ran in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)
        self.bn = torch.nn.BatchNorm2d(3, affine=False, track_running_stats=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-10.0, 0.0, 10.0]).view(3, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([3.0, 0.0, -7.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.bn(self.conv(x))
        return logits, torch.zeros_like(x)  # (seg, embeddings): the seg head's logits come first

    @staticmethod
    def expected(x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([3.0 - 10.0 * x, torch.zeros_like(x), 10.0 * x - 7.0])
        return logits.argmax(dim=0).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------------------------------


def test_preprocess_resamples_in_plane_and_crops(tfm, tmp_path):
    img, lab = _volume()
    item = {"image": _write(tmp_path / "img.nii.gz", img, _affine()),
            "label": _write(tmp_path / "lab.nii.gz", lab, _affine())}
    out = tfm.preprocess_transforms(pixdim=(2.0, 2.0), spatial_size=(20, 20))(dict(item))
    image, label = out["image"], out["label"]
    assert image.shape == label.shape == (1, 20, 20, 8)  # 32 * 1.5 mm = 24 voxels at 2 mm, cropped to 20; Z kept
    spacing = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, [2.0, 2.0, 5.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine))
    assert set(np.unique(np.asarray(label)).tolist()) <= {0.0, 1.0, 2.0}  # nearest: no blended class values
    inside = np.asarray(image)[np.asarray(label) == 2]
    assert inside.size and inside.mean() > 0.9  # the square's label stays on the bright square

    default = tfm.preprocess_transforms()(dict(item))  # ACDC: 1.36719 mm, 192 x 192 (zero padded)
    assert default["image"].shape == default["label"].shape == (1, 192, 192, 8)
    spacing = np.sqrt((np.asarray(default["image"].affine)[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, [1.36719, 1.36719, 5.0], atol=1e-5)
    assert float(default["image"][0, :5].abs().max()) == 0.0  # the padding is zeros


def test_preprocess_keeps_the_other_entries_of_a_monailabel_request(tfm, tmp_path):
    """MONAI Label's inference requests carry ``image_path`` (a string) beside ``image``: MONAI's ``Spacingd`` took
    every ``image_*`` entry of a NIfTI volume for a meta-data dictionary and failed on it."""
    from monai.transforms import Invertd

    img, _ = _volume()
    path = _write(tmp_path / "img.nii.gz", img, _affine())
    preprocess = tfm.preprocess_transforms(keys=["image"], pixdim=(2.0, 2.0), spatial_size=(32, 32))
    out = preprocess({"image": path, "image_path": path, "image_meta_dict": {"note": 1}})
    assert out["image"].shape == (1, 32, 32, 8) and out["image_path"] == path
    assert out["image_meta_dict"]["note"] == 1  # a meta-data dictionary is still updated, not dropped
    out["pred"] = out["image"].clone()
    back = Invertd(keys="pred", transform=preprocess, orig_keys="image", nearest_interp=False)(out)
    assert back["pred"].shape == (1, *SHAPE)  # the resampling still inverts onto the volume's own grid


def test_percentile_scaling_maps_percentiles_to_0_and_1(tfm):
    x = torch.linspace(-50.0, 950.0, 8 * 10 * 10).reshape(1, 8, 10, 10)
    p1, p99 = np.percentile(x.numpy(), [1, 99])
    out = tfm.preprocess_transforms(pixdim=None, spatial_size=None, load=False)({"image": x})["image"]
    np.testing.assert_allclose(np.asarray(out), (x.numpy() - p1) / (p99 - p1), atol=1e-5)
    assert float(out.min()) < 0.0 and float(out.max()) > 1.0  # the reference does not clip
    clipped = tfm.preprocess_transforms(pixdim=None, spatial_size=None, clip=True, load=False)({"image": x})["image"]
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0
    lo, hi = np.asarray(x) <= p1, np.asarray(x) >= p99
    assert np.all(np.asarray(clipped)[lo] == 0.0) and np.all(np.asarray(clipped)[hi] == 1.0)
    with pytest.raises(ValueError, match="pixdim"):
        tfm.preprocess_transforms(pixdim=(1.0, 0.0))


# ----------------------------------------------------------------------------------------------------------------------
# augmentations
# ----------------------------------------------------------------------------------------------------------------------


def _slice() -> dict:
    img = torch.zeros(1, 64, 64)
    lab = torch.zeros(1, 64, 64)
    img[:, 16:40, 20:44], lab[:, 16:40, 20:44] = 1.0, 2.0  # the square
    img[:, 48:56, 12:52], lab[:, 48:56, 12:52] = 0.5, 1.0  # a bar
    return {"image": img, "label": lab}


def _check_aligned(out: dict) -> None:
    image, label = np.asarray(out["image"]), np.asarray(out["label"])
    assert image.shape == label.shape == (1, 64, 64)
    assert set(np.unique(label).tolist()) <= {0.0, 1.0, 2.0}
    assert (label == 2).sum() > 150  # the square (576 pixels; the deformation scales it locally) is still there
    assert image[label == 2].mean() > 0.85  # ... and its label moved with it
    assert image[label == 0].mean() < 0.1
    assert abs(image[label == 1].mean() - 0.5) < 0.15


def test_augmentations_move_image_and_label_together(tfm):
    base = _slice()
    moved = 0
    tr = tfm.train_transforms(spatial_size=(64, 64), deform_prob=1.0)
    tr.set_random_state(0)
    for _ in range(10):
        out = tr({k: v.clone() for k, v in base.items()})
        _check_aligned(out)
        moved += int(not torch.equal(torch.as_tensor(out["label"]), base["label"]))
    assert moved >= 8  # the deformation alone changes nearly every draw
    # every affine option on its own (rotation, zoom, flip, k * 45 degrees, none)
    for option in tfm.affine_options().transforms:
        if hasattr(option, "set_random_state"):
            option.set_random_state(1)
        if hasattr(option, "prob"):
            option.prob = 1.0
        _check_aligned(option({k: v.clone() for k, v in base.items()}))
    flipped = tfm.affine_options(flip_prob=1.0).transforms[2](dict(base))
    assert torch.equal(torch.as_tensor(flipped["label"]), base["label"].flip(-1))  # left-right: the second axis


def test_intensity_augmentation_drawn_per_image(tfm):
    x = 0.4 + 0.2 * torch.rand(1, 1, 16, 16).repeat(6, 1, 1, 1)  # six identical images in [0.4, 0.6]
    out = tfm.RandBrightnessContrast(seed=0)(x)
    shifts = (out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)))  # the contrast keeps the mean: the shift is delta
    factors = out.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert len(set(np.round(shifts.numpy(), 5).tolist())) == 6  # a different draw for every image
    assert torch.all(shifts.abs() <= 0.3 + 1e-5) and torch.all((factors >= 0.7 - 1e-4) & (factors <= 1.3 + 1e-4))
    shared = tfm.RandBrightnessContrast(seed=0, per_image=False)(x)  # the reference: one draw per batch
    assert torch.allclose(shared, shared[:1].expand_as(shared))
    wide = tfm.RandBrightnessContrast(seed=1, contrast=(1.3, 1.3))(torch.linspace(-1, 3, 64).view(1, 1, 8, 8))
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.5  # clipped to [0, 1.5]
    per_item = tfm.intensity_transforms()
    per_item.set_random_state(0)
    a, b = (per_item({"image": x[0].clone()})["image"] for _ in range(2))
    assert not torch.allclose(torch.as_tensor(a), torch.as_tensor(b))


# ----------------------------------------------------------------------------------------------------------------------
# pseudo-labels
# ----------------------------------------------------------------------------------------------------------------------


def test_predict_volume_slice_by_slice(pl):
    net = ThresholdNet().train()
    vol = torch.rand(1, 12, 10, 5)
    labels = pl.predict_volume(net, vol, batch_size=2)
    assert labels.shape == (1, 12, 10, 5) and labels.dtype == torch.uint8
    assert torch.equal(labels[0], ThresholdNet.expected(vol[0]))  # eval mode: BN running stats are the identity
    assert net.training  # the network's mode is restored
    lab3, probs = pl.predict_volume(net, vol[0], return_probs=True)
    assert lab3.shape == (12, 10, 5) and probs.shape == (3, 12, 10, 5)
    assert torch.allclose(probs.sum(0), torch.ones(12, 10, 5), atol=1e-5)
    with pytest.raises(ValueError, match="one channel"):
        pl.predict_volume(net, torch.rand(2, 4, 4, 3))


def test_pseudo_labels_written_as_nifti_with_source_affine(pl, tfm, tmp_path):
    items = []
    for i in range(3):
        img, _ = _volume(i)
        items.append({"image": _write(tmp_path / "data" / f"p{i}_frame01.nii.gz", img, _affine()), "case": "p"})
    net = ThresholdNet()
    native = tfm.preprocess_transforms(pixdim=None, spatial_size=None)
    out = pl.generate_pseudo_labels(net, items, native, tmp_path / "run", round_index=1, batch_size=3)
    folder = tmp_path / "run" / "pseudo_labels" / "round_1"
    assert [Path(d["label"]).name for d in out] == [f"p{i}_frame01.nii.gz" for i in range(3)]
    for item, src in zip(out, items):
        assert item["image"] == src["image"] and item["pseudo_label_round"] == 1
        saved = nib.load(item["label"])
        arr = np.asarray(saved.dataobj)
        assert arr.shape == SHAPE and arr.dtype == np.uint8
        assert set(np.unique(arr).tolist()) <= {0, 1, 2} and (arr == 2).sum() == 12 * 12 * 8  # the square
        np.testing.assert_allclose(saved.affine, _affine())  # the source volume's affine
    manifest = json.loads((folder / "pseudo_labels.json").read_text())
    assert manifest["round"] == 1 and manifest["crf"] is None and manifest["pseudo_labeled"] == out

    # on the network's grid (resampled, cropped): the affine of that grid, and the same preprocessing leaves it as is
    prep = tfm.preprocess_transforms(pixdim=(2.0, 2.0), spatial_size=(20, 20))
    out = pl.generate_pseudo_labels(net, items[:1], prep, tmp_path / "run", round_index=2)
    saved = nib.load(out[0]["label"])
    again = prep({"image": items[0]["image"], "label": out[0]["label"]})
    np.testing.assert_allclose(saved.affine, np.asarray(again["image"].affine), atol=1e-6)
    assert saved.shape == (20, 20, 8)
    np.testing.assert_array_equal(np.asarray(again["label"])[0], np.asarray(saved.dataobj))


def test_failed_write_leaves_no_partial_file(pl, tmp_path, monkeypatch):
    target = tmp_path / "round_0" / "case.nii.gz"
    pl.save_label_volume(torch.ones(1, 4, 4, 2, dtype=torch.uint8), target, np.eye(4))
    before = target.read_bytes()

    def broken_save(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        pl.save_label_volume(torch.zeros(4, 4, 2, dtype=torch.uint8), target, np.eye(4))
    with pytest.raises(OSError, match="disk full"):
        pl.save_label_volume(torch.zeros(4, 4, 2, dtype=torch.uint8), tmp_path / "round_0" / "new.nii.gz")
    assert sorted(p.name for p in target.parent.iterdir()) == ["case.nii.gz"]  # no temporary or partial file
    assert target.read_bytes() == before  # the previous file is intact


def test_crf_refinement_or_clear_error(pl, tmp_path):
    probs = torch.full((3, 12, 20), 0.1)  # not square: a transposed (H, W) would show
    probs[2, 2:6, 3:15] = 0.8
    probs[0] = 1.0 - probs[1] - probs[2]
    image = (probs[2] > 0.5).float()
    probs[:, 3, 8] = torch.tensor([0.5, 0.1, 0.4])  # an uncertain pixel inside the rectangle, argmax background
    if pl.crf_available():
        reference = pl.crf_refine(probs, image)  # the reference's settings (made for 192 x 192 slices) run
        assert reference.shape == (12, 20) and set(np.unique(reference).tolist()) <= {0, 1, 2}
        local = pl.CRFSettings(gaussian_sxy=1.0, gaussian_compat=1.0, bilateral_sxy=3.0, bilateral_schan=0.1)
        refined = pl.crf_refine(probs, image, local)
        expected = np.zeros((12, 20), np.uint8)
        expected[2:6, 3:15] = 2
        np.testing.assert_array_equal(refined, expected)  # the bilateral term fills the uncertain pixel
        volume = pl.crf_refine_volume(probs[..., None].repeat(1, 1, 1, 2), image[None, ..., None].repeat(1, 1, 1, 2),
                                      local)
        assert volume.shape == (12, 20, 2) and torch.equal(volume[..., 1], torch.from_numpy(expected))
        return
    with pytest.raises(pl.CRFUnavailableError, match="pydensecrf2"):
        pl.crf_refine(probs, image)
    items = [{"image": _write(tmp_path / "x.nii.gz", _volume()[0], _affine())}]
    with pytest.raises(pl.CRFUnavailableError, match="pip install pydensecrf2"):
        pl.generate_pseudo_labels(ThresholdNet(), items, lambda d: d, tmp_path / "run", 0, crf=pl.CRFSettings())
    assert not (tmp_path / "run").exists()  # refused before any work
