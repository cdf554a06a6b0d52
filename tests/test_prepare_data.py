# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Tests of ``scripts/prepare_data.py`` on tiny synthetic layouts and (marked ``realdata``) on ../shared/data."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prepare_data.py"
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _load_tool():
    """Import the script as a stand-alone module (the bundles own a package named ``scripts``)."""
    spec = importlib.util.spec_from_file_location("prepare_data_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_data_tool"] = module
    spec.loader.exec_module(module)
    return module


pdt = _load_tool()
Error = pdt.DatasetPreparationError


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _read_datalist(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _cases(datalist: dict, key: str) -> set[str]:
    return {entry["case"] for entry in datalist[key]}


def _assert_disjoint(datalist: dict, allow_eval_shared: bool = False) -> None:
    keys = pdt.LIST_KEYS
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            if allow_eval_shared and {first, second} == {"validation", "test"}:
                continue
            assert not _cases(datalist, first) & _cases(datalist, second), (first, second)


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


def _grey_rgb(h: int = 16, w: int = 20, value: int = 0) -> np.ndarray:
    grey = (np.arange(h * w).reshape(h, w) % 200 + value).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _label_png(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "L"
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------
# synthetic layouts
# ---------------------------------------------------------------------------------------------

H, W = 16, 20
RECT_A = _rect(H, W, 2, 6, 3, 8)
RECT_B = _rect(H, W, 9, 14, 10, 17)


@pytest.fixture
def busi_root(tmp_path: Path) -> Path:
    """BUSI-style tree: 1-bit, L, RGB, RGBA (opaque and transparent-background) masks and a _mask_1."""
    root = tmp_path / "BUSI" / "Dataset_BUSI_with_GT"
    benign, malignant, normal = root / "benign", root / "malignant", root / "normal"
    _png(benign / "benign (1).png", _grey_rgb())
    _png(benign / "benign (1)_mask.png", RECT_A.astype(np.uint8) * 255, mode="1")
    _png(benign / "benign (2).png", _grey_rgb())
    _png(benign / "benign (2)_mask.png", RECT_A.astype(np.uint8) * 255)  # L
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255  # opaque alpha everywhere: alpha alone is not foreground
    rgba[RECT_B, :3] = 255
    _png(benign / "benign (2)_mask_1.png", rgba)
    _png(benign / "benign (10).png", _grey_rgb())
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[RECT_B, 0] = 255  # only the red channel
    _png(benign / "benign (10)_mask.png", rgb)
    caliper = _grey_rgb()
    caliper[0, 0] = (255, 255, 0)  # a coloured caliper pixel
    _png(malignant / "malignant (1).png", caliper)
    transparent = np.zeros((H, W, 4), np.uint8)
    transparent[..., :3] = 255  # white colour but fully transparent: not foreground
    transparent[RECT_A, 3] = 255
    _png(malignant / "malignant (1)_mask.png", transparent)
    _png(malignant / "malignant (2).png", _grey_rgb())
    _png(malignant / "malignant (2)_mask.png", RECT_B.astype(np.uint8) * 255, mode="1")
    for n in (1, 2):
        _png(normal / f"normal ({n}).png", _grey_rgb())
        _png(normal / f"normal ({n})_mask.png", np.zeros((H, W, 3), np.uint8))
    return tmp_path / "BUSI"


@pytest.fixture
def ddti_root(tmp_path: Path) -> Path:
    """DDTI-style tree: 6 patients, some with several images/nodules, GIF masks 0/255."""
    root = tmp_path / "DDTI"
    stems = ["1_1", "2_1(1)", "2_1(2)", "3_1", "3_2", "4_1", "5_1(1)", "5_1(2)", "5_2", "6_1"]
    for stem in stems:
        _png(root / "cropped" / f"{stem}.png", _grey_rgb()[..., 0])
        gif = root / "mask" / f"{stem}.gif"
        gif.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(RECT_A.astype(np.uint8) * 255).save(gif)
    return root


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1


@pytest.fixture
def hc18_root(tmp_path: Path) -> Path:
    """HC18-style tree: filled and outline annotations, a second scan of subject 010, the csv."""
    root = tmp_path / "HC18"
    ts = root / "training_set"
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    filled = _ellipse(H, W)
    outline = filled & ~np.pad(filled, 1)[2:, 1:-1] | filled & ~np.pad(filled, 1)[:-2, 1:-1]
    outline |= filled & ~np.pad(filled, 1)[1:-1, 2:] | filled & ~np.pad(filled, 1)[1:-1, :-2]
    for i, stem in enumerate(["001_HC", "002_HC", "010_HC", "010_2HC", "011_HC", "012_HC"]):
        _png(ts / f"{stem}.png", _grey_rgb()[..., 0])
        ann = np.zeros((H, W, 3), np.uint8)
        ann[outline if stem == "002_HC" else filled] = 255
        _png(ts / f"{stem}_Annotation.png", ann)
        rows.append(f"{stem}.png,{0.1 + i / 100:.3f},70.0")
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def switch_root(tmp_path: Path) -> Path:
    """Switch-style tree with an unsorted train.txt order."""
    root = tmp_path / "switch"
    names = [f"img{i}.png" for i in range(9)]
    for name in names:
        _png(root / "images" / name, _grey_rgb())
        _png(root / "labels" / name, RECT_A.astype(np.uint8) * 255)
    (root / "train.txt").write_text("img5.png\nimg2.png\nimg0.png\nimg4.png\nimg1.png\n")
    (root / "val.txt").write_text("img3.png\nimg6.png\n")
    (root / "test.txt").write_text("img7.png\nimg8.png\n")
    return root


def _write_la(root: Path, cases: list[str], lists: dict[str, list[str]]) -> Path:
    rng = np.random.default_rng(0)
    for case in cases:
        (root / case).mkdir(parents=True, exist_ok=True)
        with h5py.File(root / case / "mri_norm2.h5", "w") as handle:
            handle["image"] = rng.normal(size=(6, 5, 4)).astype(np.float32)
            handle["label"] = (rng.random((6, 5, 4)) > 0.5).astype(np.uint8)
    for name, ids in lists.items():
        (root / name).write_text("\n".join(ids) + "\n")
    return root


def _acdc_volume(patient: int, frame: int, z: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(patient * 100 + frame)
    return rng.random((z, 6, 5)), rng.integers(0, 4, size=(z, 6, 5)).astype(np.uint8)


@pytest.fixture
def acdc_root(tmp_path: Path) -> Path:
    """SSL4MIS-style ACDC tree: volumes, one patient stored only as slices, slice/volume lists."""
    root = tmp_path / "ACDC"
    (root / "data" / "slices").mkdir(parents=True)
    train, val = [10, 11, 38, 50, 99], [20, 21]
    for patient in train + val:
        for frame in (1, 12):
            image, label = _acdc_volume(patient, frame)
            stem = f"patient{patient:03d}_frame{frame:02d}"
            if patient == 38:  # slices only (K from 1)
                for k in range(image.shape[0]):
                    with h5py.File(root / "data" / "slices" / f"{stem}_slice_{k + 1}.h5", "w") as handle:
                        handle["image"], handle["label"] = image[k], label[k]
                continue
            with h5py.File(root / "data" / f"{stem}.h5", "w") as handle:
                handle["image"], handle["label"] = image, label  # image float64
    lines = [f"data/slices/patient{p:03d}_frame01_slice_1.h5" for p in train]
    (root / "labeled_slices.txt").write_text("\n".join(lines[2:]) + "\n")
    (root / "unlabeled_slices.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "val_volumes.txt").write_text(
        "".join(f"data/patient{p:03d}_frame{f:02d}.h5\n" for p in val for f in (1, 12))
    )
    return root


def _nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return path


# ---------------------------------------------------------------------------------------------
# split function
# ---------------------------------------------------------------------------------------------


def test_split_cases_seeded_disjoint_and_minimum_one() -> None:
    cases = [f"c{i:02d}" for i in range(50)]
    kwargs = {"labeled_ratio": 0.2, "val_ratio": 0.1, "test_ratio": 0.2}
    first = pdt.split_cases(cases, seed=0, **kwargs)
    assert first == pdt.split_cases(list(reversed(cases)), seed=0, **kwargs)
    assert first != pdt.split_cases(cases, seed=1, **kwargs)
    assert [len(first[k]) for k in pdt.LIST_KEYS] == [7, 28, 5, 10]
    assert sorted(sum(first.values(), [])) == cases
    pdt.validate_splits(first)
    small = pdt.split_cases(["a", "b", "c", "d"], seed=0, labeled_ratio=0.05, val_ratio=0.05, test_ratio=0.05)
    assert all(len(small[k]) == 1 for k in pdt.LIST_KEYS)
    with pytest.raises(Error, match="too few"):
        pdt.split_cases(["a", "b"], seed=0, labeled_ratio=0.1, val_ratio=0.1, test_ratio=0.1)


def test_validate_splits_rejects_overlap_and_empty_labelled() -> None:
    with pytest.raises(Error, match="both labeled and test"):
        pdt.validate_splits({"labeled": ["a"], "unlabeled": [], "validation": [], "test": ["a"]})
    with pytest.raises(Error, match="labelled list is empty"):
        pdt.validate_splits({"labeled": [], "unlabeled": ["a"], "validation": [], "test": []})
    pdt.validate_splits({"labeled": ["a"], "unlabeled": [], "validation": ["b"], "test": ["b"]}, shared_eval=True)


# ---------------------------------------------------------------------------------------------
# 2D commands
# ---------------------------------------------------------------------------------------------


def test_busi_masks_union_and_datalist(busi_root: Path, tmp_path: Path) -> None:
    path = pdt.busi(str(busi_root), str(tmp_path / "out"), labeled_ratio=0.5, val_ratio=0.2, test_ratio=0.2)
    out = path.parent
    dl = _read_datalist(path)
    assert dl["modality"] == "US" and dl["dimensions"] == 2 and dl["spacing"] is None and not dl["spacing_known"]
    assert dl["labels"] == {"0": "background", "1": "lesion"}
    assert dl["source"]["format"] == "busi" and dl["source"]["tool"].startswith("scripts/prepare_data.py busi")
    ids = sorted(p.stem for p in (out / "images").glob("*.png"))
    assert ids == [
        "benign_001",
        "benign_002",
        "benign_010",
        "malignant_001",
        "malignant_002",
        "normal_001",
        "normal_002",
    ]
    assert sum(dl["split"]["counts"].values()) == 7 and dl["split"]["seed"] == 0
    _assert_disjoint(dl)
    for key in ("labeled", "validation", "test"):
        assert all(set(e) >= {"image", "label", "case"} for e in dl[key])
    assert all("label" not in e for e in dl["unlabeled"])
    expect = {
        "benign_001": RECT_A,
        "benign_002": RECT_A | RECT_B,
        "benign_010": RECT_B,
        "malignant_001": RECT_A,
        "malignant_002": RECT_B,
        "normal_001": np.zeros((H, W), bool),
    }
    for uid, mask in expect.items():
        label = _label_png(out / "labels" / f"{uid}.png")
        assert set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label, mask.astype(np.uint8), err_msg=uid)
    image = Image.open(out / "images" / "malignant_001.png")
    assert image.mode == "L" and image.size == (W, H)

    again = _read_datalist(
        pdt.busi(str(busi_root), str(tmp_path / "again"), labeled_ratio=0.5, val_ratio=0.2, test_ratio=0.2)
    )
    assert all(again[k] == dl[k] for k in pdt.LIST_KEYS)
    other = _read_datalist(
        pdt.busi(str(busi_root), str(tmp_path / "seed3"), seed=3, labeled_ratio=0.5, val_ratio=0.2, test_ratio=0.2)
    )
    assert any(other[k] != dl[k] for k in pdt.LIST_KEYS)
    no_normal = _read_datalist(
        pdt.busi(str(busi_root), str(tmp_path / "nn"), exclude_normal=True, val_ratio=0.2, test_ratio=0.2)
    )
    assert not any(e["case"].startswith("normal") for k in pdt.LIST_KEYS for e in no_normal[k])


def test_several_source_folders_are_merged_into_one_dataset(ddti_root: Path, busi_root: Path, tmp_path: Path) -> None:
    """``--source a,b`` (BUSI + BUSI_more, DDTI + DDTI_more): one dataset, a patient's images in one list."""
    more = tmp_path / "DDTI_more"
    for stem in ["5_3", "7_1", "8_1(1)", "8_1(2)"]:  # patient 5 also has images in the first folder
        _png(more / "cropped" / f"{stem}.png", _grey_rgb()[..., 0])
        (more / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(RECT_A.astype(np.uint8) * 255).save(more / "mask" / f"{stem}.gif")
    for seed in range(3):
        path = pdt.ddti(f"{ddti_root},{more}", str(tmp_path / f"d{seed}"), seed=seed, labeled_ratio=0.5)
        dl = _read_datalist(path)
        _assert_disjoint(dl)
        per_list = {k: {e["image"] for e in dl[k]} for k in pdt.LIST_KEYS}
        assert sum(len(v) for v in per_list.values()) == 14
        home = {e["case"]: k for k in pdt.LIST_KEYS for e in dl[k]}
        assert {"images/5_1_1.png", "images/5_2.png", "images/5_3.png"} <= per_list[home["5"]]
        assert dl["source"]["path"] == f"{ddti_root.resolve()},{more.resolve()}"
        assert f"--source {ddti_root.resolve()},{more.resolve()}" in dl["source"]["tool"]
    # a list works too (the Python API), and the same BUSI image in two folders is refused by name
    copy = tmp_path / "BUSI_copy" / "Dataset_BUSI_with_GT" / "benign"
    copy.mkdir(parents=True)
    for name in ("benign (1).png", "benign (1)_mask.png"):
        (copy / name).write_bytes((busi_root / "Dataset_BUSI_with_GT" / "benign" / name).read_bytes())
    with pytest.raises(pdt.DatasetPreparationError, match=r"benign \(1\)\.png: maps to the same id 'benign_001'"):
        pdt.busi([str(busi_root), str(tmp_path / "BUSI_copy")], str(tmp_path / "b"))
    with pytest.raises(pdt.DatasetPreparationError, match="source folder given twice"):
        pdt.ddti(f"{ddti_root},{ddti_root}", str(tmp_path / "twice"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "twice").exists()


def test_ddti_groups_by_patient(ddti_root: Path, tmp_path: Path) -> None:
    for seed in range(4):
        dl = _read_datalist(
            pdt.ddti(
                str(ddti_root), str(tmp_path / f"o{seed}"), seed=seed, labeled_ratio=0.5, val_ratio=0.2, test_ratio=0.2
            )
        )
        _assert_disjoint(dl)
        per_list = {k: {e["image"] for e in dl[k]} for k in pdt.LIST_KEYS}
        assert sum(len(v) for v in per_list.values()) == 10
        home = {e["case"]: k for k in pdt.LIST_KEYS for e in dl[k]}
        assert set(home) == {"1", "2", "3", "4", "5", "6"}
        assert {"images/5_1_1.png", "images/5_1_2.png", "images/5_2.png"} <= per_list[home["5"]]
    out = tmp_path / "o0"
    label = _label_png(out / "labels" / "2_1_2.png")
    np.testing.assert_array_equal(label, RECT_A.astype(np.uint8))


def test_hc18_spacing_subjects_and_outline_fill(hc18_root: Path, tmp_path: Path) -> None:
    path = pdt.hc18(str(hc18_root), str(tmp_path / "out"), labeled_ratio=0.5, val_ratio=0.2, test_ratio=0.2)
    dl = _read_datalist(path)
    assert dl["spacing_known"] is True and dl["spacing"] is None
    entries = {Path(e["image"]).stem: e for k in pdt.LIST_KEYS for e in dl[k]}
    assert entries["002_HC"]["spacing"] == [0.11, 0.11]
    assert entries["010_2HC"]["case"] == entries["010_HC"]["case"] == "010"
    home = {Path(e["image"]).stem: k for k in pdt.LIST_KEYS for e in dl[k]}
    assert home["010_2HC"] == home["010_HC"]
    filled = _label_png(path.parent / "labels" / "002_HC.png")  # stored as an outline
    np.testing.assert_array_equal(filled, _ellipse(H, W).astype(np.uint8))


def test_switch_first_names_are_labelled(switch_root: Path, tmp_path: Path) -> None:
    dl = _read_datalist(pdt.switch(str(switch_root), str(tmp_path / "out"), labeled_ratio=0.5))
    assert [e["case"] for e in dl["labeled"]] == ["img2", "img5"]  # floor(0.5 * 5) = 2: img5, img2
    assert {e["case"] for e in dl["unlabeled"]} == {"img0", "img4", "img1"}
    assert _cases(dl, "validation") == {"img3", "img6"} and _cases(dl, "test") == {"img7", "img8"}
    label = _label_png(tmp_path / "out" / "labels" / "img5.png")
    assert set(np.unique(label)) == {0, 1}
    with pytest.raises(Error, match="train.txt"):
        pdt.switch(str(switch_root), str(tmp_path / "none"), labeled_ratio=0.1)


def test_folder_pairs_unlabelled_and_classes(tmp_path: Path) -> None:
    images, labels = tmp_path / "imgs", tmp_path / "masks"
    for i in range(6):
        _png(images / f"s{i}.png", _grey_rgb()[..., 0])
        _png(labels / f"s{i}.png", (RECT_A * (i % 3)).astype(np.uint8))  # values 0, 1, 2
    _png(images / "extra.png", _grey_rgb()[..., 0])
    with pytest.raises(Error, match="extra.png.*without its label"):
        pdt.folder(str(images), str(labels), str(tmp_path / "a"), num_classes=3)
    dl = _read_datalist(
        pdt.folder(
            str(images),
            str(labels),
            str(tmp_path / "b"),
            num_classes=3,
            unlabeled_without_label=True,
            val_ratio=0.2,
            test_ratio=0.2,
        )
    )
    assert "extra" in _cases(dl, "unlabeled") and dl["labels"]["2"] == "class_2"
    _assert_disjoint(dl)
    assert set(np.unique(_label_png(tmp_path / "b" / "labels" / "s2.png"))) == {0, 2}
    with pytest.raises(Error, match=r"s[25]\.png: label values \[0, 2\] outside the declared classes 0\.\.1"):
        pdt.folder(str(images), str(labels), str(tmp_path / "c"), num_classes=2, unlabeled_without_label=True)


def test_folder_maps_255_to_one(tmp_path: Path) -> None:
    images, labels = tmp_path / "imgs", tmp_path / "masks"
    for i in range(4):
        _png(images / f"s{i}.png", _grey_rgb()[..., 0])
        _png(labels / f"s{i}.png", RECT_A.astype(np.uint8) * 255)
    pdt.folder(str(images), str(labels), str(tmp_path / "out"), val_ratio=0.25, test_ratio=0.25)
    np.testing.assert_array_equal(_label_png(tmp_path / "out" / "labels" / "s1.png"), RECT_A.astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# 3D commands
# ---------------------------------------------------------------------------------------------


def test_la_complement_affine_and_test_from(tmp_path: Path) -> None:
    cases = [f"CASE{i}" for i in range(7)]
    root = _write_la(
        tmp_path / "LA", cases, {"labeled.list": cases[:4], "unlabeled.list": cases[4:6], "val.list": cases[6:]}
    )
    dl = _read_datalist(pdt.la(str(root), str(tmp_path / "out"), num_labeled=2))
    assert _cases(dl, "labeled") == {"CASE0", "CASE1"}
    assert _cases(dl, "unlabeled") == {"CASE2", "CASE3", "CASE4", "CASE5"}
    assert _cases(dl, "validation") == {"CASE6"} and dl["test"] == []
    assert dl["spacing"] == [0.625] * 3 and dl["spacing_known"] and dl["modality"] == "MR" and dl["dimensions"] == 3
    _assert_disjoint(dl)
    nii = nib.load(tmp_path / "out" / "images" / "CASE0.nii.gz")
    np.testing.assert_allclose(nii.header.get_zooms(), (0.625,) * 3)
    assert nii.get_data_dtype() == np.float32
    with h5py.File(root / "CASE0" / "mri_norm2.h5") as handle:
        np.testing.assert_array_equal(np.asarray(nii.dataobj), handle["image"][()])
        seg = nib.load(tmp_path / "out" / "labels" / "CASE0.nii.gz")
        assert seg.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(seg.dataobj), handle["label"][()])
    shared = _read_datalist(pdt.la(str(root), str(tmp_path / "tv"), num_labeled=4, test_from="val"))
    assert shared["test"] == shared["validation"] and shared["split"]["test_from"] == "val"
    with pytest.raises(Error, match="labeled.list.*num_labeled 16"):
        pdt.la(str(root), str(tmp_path / "x"), num_labeled=16)


def test_downsample_volume_averages_blocks_and_keeps_the_extent() -> None:
    image = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    label = np.zeros((4, 4, 2), dtype=np.uint8)
    label[:2, :2, :] = 1
    label[0, 0, 0] = 0  # the block stays class 1 (7 of 8 voxels)
    label[2:, 2:, 0] = 1  # a block split 4/4: the lower class wins
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (10.0, 20.0, 30.0)
    small, small_label, new_affine = pdt.downsample_volume(image, label, affine, factor=2, num_classes=2)
    assert small.shape == small_label.shape == (2, 2, 1)
    np.testing.assert_allclose(small[0, 0, 0], image[:2, :2, :].mean())
    np.testing.assert_allclose(small[1, 0, 0], image[2:, :2, :].mean())
    np.testing.assert_array_equal(small_label[..., 0], [[1, 0], [0, 0]])
    # voxel sizes double; the new first voxel's centre is the centre of the old first block
    np.testing.assert_allclose(np.diag(new_affine)[:3], (1.0, 1.0, 4.0))
    np.testing.assert_allclose(new_affine @ [0, 0, 0, 1], affine @ [0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(new_affine @ [1, 1, 0, 1], affine @ [2.5, 2.5, 0.5, 1])
    assert pdt.downsample_volume(image, None, affine, factor=1, num_classes=2)[0] is image


def test_la_downsample_records_each_spacing(tmp_path: Path) -> None:
    cases = [f"CASE{i}" for i in range(5)]
    root = _write_la(tmp_path / "LA", cases, {"labeled.list": cases[:2], "unlabeled.list": cases[2:4], "val.list": cases[4:]})
    dl = _read_datalist(pdt.la(str(root), str(tmp_path / "out"), num_labeled=2, downsample=2))
    nii = nib.load(tmp_path / "out" / "images" / "CASE0.nii.gz")
    assert nii.shape == (3, 2, 2)  # (6, 5, 4) / 2, rounded
    np.testing.assert_allclose(nii.header.get_zooms(), (1.25, 1.5625, 1.25))
    assert all(e["spacing"] == [1.25, 1.5625, 1.25] for key in ("labeled", "unlabeled", "validation") for e in dl[key])
    assert dl["spacing"] == [1.25, 1.5625, 1.25] and dl["spacing_known"] and "downsampled 2x" in dl["description"]
    assert nib.load(tmp_path / "out" / "labels" / "CASE0.nii.gz").get_data_dtype() == np.uint8
    for bad in (0, 1.5, True):
        with pytest.raises(Error, match="--downsample must be a whole factor"):
            pdt.la(str(root), str(tmp_path / "bad"), downsample=bad)


def test_la_train_list_layout_fixes_16_label_overlap(tmp_path: Path) -> None:
    cases = [f"ID{i:02d}" for i in range(8)]
    lists = {"train.list": cases[:6], "test.list": cases[6:], "train_4_label.list": cases[:4]}
    root = _write_la(tmp_path / "LA", cases, lists)
    (root / "train_4_unlabel.list").write_text("\n".join(cases[2:6]) + "\n")  # overlapping, as the reference's
    dl = _read_datalist(pdt.la(str(root), str(tmp_path / "out"), num_labeled=4))
    assert [e["case"] for e in dl["labeled"]] == cases[:4]
    assert _cases(dl, "unlabeled") == set(cases[4:6])
    assert _cases(dl, "test") == set(cases[6:]) and dl["validation"] == []
    split = _read_datalist(pdt.la(str(root), str(tmp_path / "vs"), num_labeled=4, val_from="split"))
    assert len(split["validation"]) == 1 and len(split["test"]) == 1
    _assert_disjoint(split)


def test_acdc_transpose_slices_and_lists(acdc_root: Path, tmp_path: Path) -> None:
    path = pdt.acdc(str(acdc_root), str(tmp_path / "out"), labeled_patients=3)
    dl = _read_datalist(path)
    assert _cases(dl, "labeled") == {"patient038", "patient050", "patient099"}
    assert _cases(dl, "unlabeled") == {"patient010", "patient011"}
    assert _cases(dl, "validation") == {"patient020", "patient021"} and dl["test"] == []
    assert dl["split"]["counts"] == {"labeled": 6, "unlabeled": 4, "validation": 4, "test": 0}
    assert dl["spacing"] is None and dl["spacing_known"] is False and dl["labels"]["3"] == "left ventricle"
    _assert_disjoint(dl)
    out = path.parent
    image, label = _acdc_volume(50, 12)  # (Z, H, W)
    nii = nib.load(out / "images" / "patient050_frame12.nii.gz")
    vol = np.asarray(nii.dataobj)
    assert vol.shape == (6, 5, 3) and nii.get_data_dtype() == np.float32
    np.testing.assert_allclose(nii.header.get_zooms(), (1.0, 1.0, 1.0))
    assert vol[4, 1, 2] == pytest.approx(image[2, 4, 1], rel=1e-6)
    seg = np.asarray(nib.load(out / "labels" / "patient050_frame12.nii.gz").dataobj)
    np.testing.assert_array_equal(seg, label.transpose(1, 2, 0))
    s_image, s_label = _acdc_volume(38, 1)  # stored only as slices 1..3
    stacked = np.asarray(nib.load(out / "images" / "patient038_frame01.nii.gz").dataobj)
    np.testing.assert_allclose(stacked, s_image.transpose(1, 2, 0).astype(np.float32))
    np.testing.assert_array_equal(
        np.asarray(nib.load(out / "labels" / "patient038_frame01.nii.gz").dataobj)[..., 2], s_label[2]
    )
    explicit = _read_datalist(pdt.acdc(str(acdc_root), str(tmp_path / "ex"), labeled_patients="10,011"))
    assert _cases(explicit, "labeled") == {"patient010", "patient011"}
    assert _cases(explicit, "unlabeled") == {"patient038", "patient050", "patient099"}
    from_list = _read_datalist(
        pdt.acdc(str(acdc_root), str(tmp_path / "fl"), labeled_patients="list", test_from="split")
    )
    assert _cases(from_list, "labeled") == {"patient038", "patient050", "patient099"}
    assert len(from_list["validation"]) == 2 and len(from_list["test"]) == 2  # one patient each, both frames
    _assert_disjoint(from_list)


def test_acdc_without_lists_splits_patients(acdc_root: Path, tmp_path: Path) -> None:
    for name in ("labeled_slices.txt", "unlabeled_slices.txt", "val_volumes.txt"):
        (acdc_root / name).unlink()
    dl = _read_datalist(
        pdt.acdc(str(acdc_root), str(tmp_path / "out"), labeled_patients=1, val_ratio=0.2, test_ratio=0.2)
    )
    assert _cases(dl, "labeled") == {"patient099"}
    assert len(_cases(dl, "validation")) == 1 and len(_cases(dl, "test")) == 1
    _assert_disjoint(dl)
    for key in pdt.LIST_KEYS:  # both frames of a patient in the same list
        assert len(dl[key]) == 2 * len(_cases(dl, key))


def test_nifti_folder_keeps_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        _nifti(tmp_path / "img" / f"v{i}.nii.gz", rng.random((6, 5, 4)).astype(np.float32), (1.5, 1.5, 3.0))
        _nifti(tmp_path / "seg" / f"v{i}.nii.gz", (rng.random((6, 5, 4)) > 0.5).astype(np.uint8), (1.5, 1.5, 3.0))
    dl = _read_datalist(
        pdt.nifti(
            str(tmp_path / "o"),
            images=str(tmp_path / "img"),
            labels=str(tmp_path / "seg"),
            val_ratio=0.2,
            test_ratio=0.2,
        )
    )
    assert dl["spacing"] == [1.5, 1.5, 3.0] and dl["spacing_known"] and sum(dl["split"]["counts"].values()) == 5
    out = nib.load(tmp_path / "o" / "images" / "v0.nii.gz")
    np.testing.assert_allclose(out.header.get_zooms(), (1.5, 1.5, 3.0))
    np.testing.assert_allclose(np.asarray(out.dataobj), np.asarray(nib.load(tmp_path / "img" / "v0.nii.gz").dataobj))
    seg = nib.load(tmp_path / "o" / "labels" / "v0.nii.gz")
    assert seg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(seg.dataobj), np.asarray(nib.load(tmp_path / "seg" / "v0.nii.gz").dataobj))
    _nifti(tmp_path / "seg" / "v1.nii.gz", np.full((6, 5, 4), 3, np.uint8), (1.5, 1.5, 3.0))
    with pytest.raises(Error, match=r"v1\.nii\.gz.*outside the declared classes"):
        pdt.nifti(
            str(tmp_path / "o2"),
            images=str(tmp_path / "img"),
            labels=str(tmp_path / "seg"),
            val_ratio=0.2,
            test_ratio=0.2,
        )


def test_nifti_msd_json(tmp_path: Path) -> None:
    root = tmp_path / "Task99"
    rng = np.random.default_rng(1)
    training = []
    for i in range(4):
        _nifti(root / "imagesTr" / f"t_{i:03d}.nii.gz", rng.random((5, 5, 3)).astype(np.float32), (0.8, 0.8, 2.0))
        _nifti(root / "labelsTr" / f"t_{i:03d}.nii.gz", rng.integers(0, 3, (5, 5, 3)).astype(np.uint8), (0.8, 0.8, 2.0))
        training.append({"image": f"./imagesTr/t_{i:03d}.nii.gz", "label": f"./labelsTr/t_{i:03d}.nii.gz"})
    _nifti(root / "imagesTs" / "t_100.nii.gz", rng.random((5, 5, 3)).astype(np.float32), (0.8, 0.8, 2.0))
    spec = {
        "name": "Toy",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "a", "2": "b"},
        "training": training,
        "test": ["./imagesTs/t_100.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    dl = _read_datalist(pdt.nifti(str(tmp_path / "o"), msd=str(root / "dataset.json"), val_ratio=0.25, test_ratio=0.25))
    assert dl["name"] == "Toy" and dl["modality"] == "CT" and dl["labels"]["2"] == "b"
    assert "t_100" in _cases(dl, "unlabeled") and len(dl["labeled"]) == 1
    assert dl["spacing"] == [0.8, 0.8, 2.0]
    _assert_disjoint(dl)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_error_missing_source(tmp_path: Path) -> None:
    with pytest.raises(Error, match="nowhere.*does not exist"):
        pdt.busi(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_error_image_without_mask(busi_root: Path, tmp_path: Path) -> None:
    (busi_root / "Dataset_BUSI_with_GT" / "benign" / "benign (1)_mask.png").unlink()
    with pytest.raises(Error, match=r"benign \(1\)\.png: image without its mask"):
        pdt.busi(str(busi_root), str(tmp_path / "out"))


@pytest.mark.parametrize("damage", ["zero", "truncated", "garbage"])
def test_error_unreadable_image(busi_root: Path, tmp_path: Path, damage: str) -> None:
    path = busi_root / "Dataset_BUSI_with_GT" / "benign" / "benign (2).png"
    data = path.read_bytes()
    path.write_bytes({"zero": b"", "truncated": data[: len(data) // 2], "garbage": b"not an image at all"}[damage])
    with pytest.raises(Error, match=r"benign \(2\)\.png: (image file is empty|cannot read image)"):
        pdt.busi(str(busi_root), str(tmp_path / "out"))


def test_error_size_mismatch(ddti_root: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(ddti_root / "mask" / "3_2.gif")
    with pytest.raises(Error, match=r"3_2\.gif: mask size .* differs from image 3_2\.png"):
        pdt.ddti(str(ddti_root), str(tmp_path / "out"))


def test_error_label_values_3d(acdc_root: Path, tmp_path: Path) -> None:
    with h5py.File(acdc_root / "data" / "patient011_frame01.h5", "r+") as handle:
        del handle["label"]
        handle["label"] = np.full((3, 6, 5), 7, np.uint8)
    with pytest.raises(Error, match=r"patient011_frame01\.h5: label values \[7\] outside the declared classes 0\.\.3"):
        pdt.acdc(str(acdc_root), str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()  # a failed run removes what it wrote, so it can be retried


def test_error_unreadable_h5(acdc_root: Path, tmp_path: Path) -> None:
    (acdc_root / "data" / "patient020_frame12.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(Error, match=r"patient020_frame12\.h5: cannot read HDF5"):
        pdt.acdc(str(acdc_root), str(tmp_path / "b"))


def test_error_empty_result_and_output_checks(tmp_path: Path, switch_root: Path) -> None:
    (tmp_path / "empty" / "cropped").mkdir(parents=True)
    (tmp_path / "empty" / "mask").mkdir()
    with pytest.raises(Error, match=r"cropped: no images found"):
        pdt.ddti(str(tmp_path / "empty"), str(tmp_path / "out"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user file")
    with pytest.raises(Error, match="busy: output folder is not empty"):
        pdt.switch(str(switch_root), str(busy), labeled_ratio=0.5)
    with pytest.raises(Error, match="busy: output folder holds no datalist.json.*not replaced"):
        pdt.switch(str(switch_root), str(busy), labeled_ratio=0.5, overwrite=True)  # never deletes a user's folder
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and (busy / "keep.txt").read_text() == "user file"
    with pytest.raises(Error, match="overlaps the source"):
        pdt.switch(str(switch_root), str(switch_root / "prepared"), labeled_ratio=0.5)


def test_command_line_values_are_type_checked_before_any_file_is_read(tmp_path: Path, switch_root: Path) -> None:
    import cli_args

    def check(command, args, kwargs):
        return cli_args.check_arguments(command, args, kwargs, Error)

    with pytest.raises(Error, match=r"--labeled_ratio must be float, got 'abc'"):
        check(pdt.switch, (str(switch_root), str(tmp_path / "o")), {"labeled_ratio": "abc"})
    with pytest.raises(Error, match=r"--seed must be int, got 2.5"):
        check(pdt.busi, (str(switch_root), str(tmp_path / "o")), {"seed": 2.5})
    with pytest.raises(Error, match=r"--overwrite must be bool, got 'yes'"):
        check(pdt.busi, (str(switch_root), str(tmp_path / "o")), {"overwrite": "yes"})
    with pytest.raises(Error, match=r"--num_classes must be int or None"):
        check(pdt.nifti, ("o",), {"num_classes": True})
    with pytest.raises(Error, match="unexpected keyword argument 'bogus'"):
        check(pdt.busi, (str(switch_root), str(tmp_path / "o")), {"bogus": 1})
    # fire reads "--output 2024" as an int and "--labeled_ratio 1" as an int: both are what the user meant
    args, kwargs = check(pdt.switch, (str(switch_root), 2024), {"labeled_ratio": 1})
    assert inspect.signature(pdt.switch).bind(*args, **kwargs).arguments == {
        "source": str(switch_root), "output": "2024", "labeled_ratio": 1}
    args, kwargs = check(pdt.nifti, ("o",), {"num_classes": None, "channel": 0})
    assert inspect.signature(pdt.nifti).bind(*args, **kwargs).arguments == {
        "output": "o", "num_classes": None, "channel": 0}
    assert not (tmp_path / "o").exists()


def test_cli_reports_errors_without_traceback(tmp_path: Path, switch_root: Path) -> None:
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "busi", "--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "missing: source folder does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = subprocess.run(
        [sys.executable, str(SCRIPT), "switch", "--source", str(switch_root), "--output", str(tmp_path / "o"),
         "--labeled_ratio", "0,4"],
        capture_output=True, text=True, timeout=120,
    )
    assert typo.returncode == 2 and "--labeled_ratio must be float, got (0, 4)" in typo.stderr, typo.stderr
    assert "Traceback" not in typo.stderr and not (tmp_path / "o").exists()
    good = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "switch",
            "--source",
            str(switch_root),
            "--output",
            str(tmp_path / "o"),
            "--labeled_ratio",
            "0.4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    assert "datalist.json" in good.stderr and len(_read_datalist(tmp_path / "o" / "datalist.json")["labeled"]) == 2


# ---------------------------------------------------------------------------------------------
# real development data
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return REAL_DATA


REAL_CASES = {
    # command: (kwargs, expected item counts per list or total, expected cases per list or None)
    "busi": ({}, 60, None),
    "ddti": ({}, 150, None),
    "hc18": ({}, 30, None),
    "la": ({"num_labeled": 8}, {"labeled": 8, "unlabeled": 6, "validation": 4, "test": 0}, None),
    "acdc": (
        {"labeled_patients": 3},
        {"labeled": 6, "unlabeled": 34, "validation": 20, "test": 0},
        {"labeled": 3, "unlabeled": 17, "validation": 10, "test": 0},
    ),
}


@pytest.mark.realdata
@pytest.mark.parametrize("command", sorted(REAL_CASES))
def test_real_data(real_data: Path, tmp_path: Path, command: str) -> None:
    kwargs, counts, case_counts = REAL_CASES[command]
    path = getattr(pdt, command)(str(real_data / command.upper()), str(tmp_path / command), **kwargs)
    dl = _read_datalist(path)
    _assert_disjoint(dl)
    if isinstance(counts, int):
        assert sum(dl["split"]["counts"].values()) == counts
        assert all(dl["split"]["counts"][k] >= 1 for k in pdt.LIST_KEYS)
    else:
        assert dl["split"]["counts"] == counts
    if case_counts is not None:
        assert dl["split"]["case_counts"] == case_counts
    num_classes = len(dl["labels"])
    for entry in (dl["labeled"][0], dl["validation"][0]):
        label_path = path.parent / entry["label"]
        image_path = path.parent / entry["image"]
        if dl["dimensions"] == 2:
            label = np.asarray(Image.open(label_path))
            image = Image.open(image_path)
            assert image.mode == "L" and image.size[::-1] == label.shape
        else:
            label = np.asarray(nib.load(label_path).dataobj)
            assert nib.load(image_path).shape == label.shape
        assert label.dtype == np.uint8 and label.max() < num_classes and label.max() >= 1
    from monai.data import load_decathlon_datalist

    for key in [k for k in pdt.LIST_KEYS if dl[k]]:  # MONAI 1.6 raises IndexError on an empty "test" list
        loaded = load_decathlon_datalist(str(path), is_segmentation=key != "unlabeled", data_list_key=key)
        assert len(loaded) == dl["split"]["counts"][key]
        assert all(Path(e["image"]).is_file() for e in loaded)
    if command == "hc18":
        assert all(len(e["spacing"]) == 2 and 0.05 < e["spacing"][0] < 0.3 for e in dl["labeled"])
    if command == "la":
        np.testing.assert_allclose(nib.load(path.parent / dl["labeled"][0]["image"]).header.get_zooms(), (0.625,) * 3)
