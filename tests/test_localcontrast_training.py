# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""localcontrast_2d's training pieces: the schedule, the pair pattern, the joint loader's streams, the slice filters
and the preprocessing choices (the workflow tests run them together)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import import_bundle

import_bundle("localcontrast_2d")
from scripts.common.errors import ConfigValueError  # noqa: E402
from scripts.common.volumes import SliceDataset  # noqa: E402
from scripts.data import CONTRAST_LABELED, CONTRAST_UNLABELED, JointLoader  # noqa: E402
from scripts.rounds import check_schedule, round_of  # noqa: E402
from scripts.trainer import PAIRS, pair_sets  # noqa: E402
from scripts.transforms import preprocess_transforms, resolve_pixdim  # noqa: E402


def test_schedule_total_and_rounds():
    assert check_schedule(5000, 5000, 3) == 20000
    assert check_schedule(7, 0, 0) == 7  # the supervised baseline
    assert [round_of(i, 10, 5, 3) for i in (0, 9, 10, 14, 15, 20, 24, 99)] == [0, 0, 1, 1, 2, 3, 3, 3]
    assert round_of(50, 10, 5, 0) == 0
    for args, message in [((0, 5, 1), "supervised_iterations must be at least 1"),
                          ((5, 0, 2), "round_iterations must be at least 1 when rounds is 2"),
                          ((5, 5, -1), "rounds must be a non-negative integer"),
                          ((5.5, 5, 1), "supervised_iterations must be a non-negative integer")]:
        with pytest.raises(ConfigValueError, match=message):
            check_schedule(*args)


def test_pairs_follow_the_reference_inter_pattern():
    labeled = torch.arange(5).float().view(5, 1) + 100  # L0..L4 = 100..104
    unlabeled = torch.arange(5).float().view(5, 1) + 200  # U0..U4 = 200..204
    set1, set2 = pair_sets(labeled, unlabeled)
    assert set1.flatten().tolist() == [100, 101, 102, 103, 104, 200, 200, 202, 202, 203]
    assert set2.flatten().tolist() == [100, 201, 102, 203, 204, 200, 201, 202, 203, 204]
    # same-slice pairs (L0, L2, U0, U2), labelled-unlabelled and unlabelled-unlabelled pairs: as the reference lists
    assert sum(a == b for a, b in zip(*PAIRS)) == 4 and len(PAIRS[0]) == len(PAIRS[1]) == 10


class _Slices(torch.utils.data.Dataset):
    """``n`` 4x4 items whose image value is the index plus ``offset`` (so a batch says which items it drew)."""

    def __init__(self, n: int, offset: float = 0.0) -> None:
        self.n, self.offset, self.transform = n, offset, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.full((1, 4, 4), float(i) + self.offset), "label": torch.zeros(1, 4, 4)}


def _draws(loader: JointLoader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_joint_loader_adds_the_contrastive_sets_once_pseudo_labels_exist_and_replays_on_resume():
    def make() -> JointLoader:
        return JointLoader(_Slices(7), _Slices(6, offset=100.0), batch_size=3, contrast_size=5, seed=4)

    loader = make()
    it = iter(loader)
    first = [next(it) for _ in range(2)]
    assert all(f"{CONTRAST_UNLABELED}_image" not in b for b in first)  # step 1: the segmentation batch alone
    loader.set_unlabeled(_Slices(9, offset=200.0))
    later = [next(it) for _ in range(3)]
    for b in later:
        assert b["image"].shape == (3, 1, 4, 4)
        assert b[f"{CONTRAST_LABELED}_image"].shape == b[f"{CONTRAST_UNLABELED}_image"].shape == (5, 1, 4, 4)
        assert b[f"{CONTRAST_LABELED}_image"].min() >= 100 and b[f"{CONTRAST_UNLABELED}_image"].min() >= 200
    assert loader.consumed == 5
    # a resumed loader (state restored, the round's pseudo-labels handed over again) draws the same batches
    resumed = make()
    resumed.load_state_dict({"consumed": 2})
    resumed.set_unlabeled(_Slices(9, offset=200.0))
    again = _draws(resumed, 3)
    for a, b in zip(later, again):
        for key in ("image", f"{CONTRAST_LABELED}_image", f"{CONTRAST_UNLABELED}_image"):
            assert torch.equal(a[key], b[key])
    loader.set_unlabeled(None)  # no slice holds every class: back to the segmentation batch alone
    assert f"{CONTRAST_UNLABELED}_image" not in next(it)


def _volume(path, array, spacing=(1.5, 1.5, 8.0)):
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return str(path)


def test_slice_dataset_preprocesses_whole_volumes_and_keeps_slices_with_enough_classes(tmp_path):
    image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    label = np.zeros((40, 40, 3), np.uint8)
    label[5:15, 5:15, 0] = 1  # slice 0: classes {0, 1}
    label[5:15, 5:15, 1], label[20:30, 20:30, 1] = 1, 2  # slice 1: {0, 1, 2}
    item = {"image": _volume(tmp_path / "i.nii.gz", image), "label": _volume(tmp_path / "l.nii.gz", label)}
    prep = preprocess_transforms(pixdim=(3.0, 3.0), spatial_size=(32, 32))  # 40 px at 1.5 mm -> 20 px, padded
    every = SliceDataset([item], volume_transform=prep)
    assert len(every) == 3 and every[0]["image"].shape == (1, 32, 32)
    assert every[1]["label"].sum() > 0 and int(every[1]["label"].max()) == 2
    assert float(every[0]["image"].max()) <= 1.5  # percentile-scaled
    assert [z for _, z in SliceDataset([item], volume_transform=prep, min_classes=3).data] == [1]
    assert [z for _, z in SliceDataset([item], volume_transform=prep, min_classes=2).data] == [0, 1]


def test_unknown_spacing_or_resize_keeps_the_grid():
    assert resolve_pixdim([1.36719, 1.36719], [{"image": "a", "spacing": [1, 1, 5]}]) == [1.36719, 1.36719]
    assert resolve_pixdim([1.36719, 1.36719], [{"image": "a"}]) is None  # spacing_known: false
    assert resolve_pixdim([1.36719, 1.36719], [{"image": "a", "spacing": [1, 1, 5]}], fit="resize") is None


def test_resize_fit_resizes_slices_and_inverts(tmp_path):
    image = np.random.default_rng(1).random((50, 30, 4)).astype(np.float32)
    prep = preprocess_transforms(keys=("image",), pixdim=None, spatial_size=(32, 32), fit="resize")
    out = prep({"image": _volume(tmp_path / "i.nii.gz", image)})
    assert tuple(out["image"].shape) == (1, 32, 32, 4)
    back = prep.inverse(out)["image"]
    assert tuple(back.shape) == (1, 50, 30, 4)
    with pytest.raises(ValueError, match="fit must be one of"):
        preprocess_transforms(fit="stretch")
