# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Data of the CrossMatch bundle: the shared volume data (``scripts.common.volumes``: input checks, every bad input a
clear DataError naming the file; datalist loading; the slice dataset) and the replayable multi-stream loader
(``scripts.data``)."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, import_bundle

SHAPE = (16, 16, 8)
ROI = (16, 16, 8)


@pytest.fixture
def data():
    """``scripts.data`` of the crossmatch_3d bundle (imported here: the bundles share the package name)."""
    import_bundle("crossmatch_3d")
    return importlib.import_module("scripts.data")


@pytest.fixture
def volumes(data):
    """``scripts.common.volumes`` of the same import of the bundle as ``data``: reading and checking volumes, the slice
    dataset (one import, so that ``data`` and ``volumes`` share their classes)."""
    return importlib.import_module("scripts.common.volumes")


@pytest.fixture
def tfm():
    import_bundle("crossmatch_3d")
    return importlib.import_module("scripts.transforms")


def _nii(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))
    return path


def make_dataset(root: Path, n: int = 2, shape=SHAPE, num_classes: int = 2, spacing=(0.5, 0.5, 2.0),
                 spacing_known: bool = True) -> Path:
    """A valid tiny dataset of ``n`` volumes per split (``c000`` is the first labelled one)."""
    rng = np.random.default_rng(0)
    content = {"name": "tiny", "dimensions": 3, "labels": {str(c): f"class{c}" for c in range(num_classes)},
               "spacing": list(spacing), "spacing_known": spacing_known}
    k = 0
    for split in ("labeled", "unlabeled", "validation", "test"):
        items = []
        for _ in range(n):
            cid = f"c{k:03d}"
            _nii(root / "images" / f"{cid}.nii.gz", rng.standard_normal(shape).astype(np.float32), spacing)
            item = {"image": f"images/{cid}.nii.gz", "case": cid}
            if split != "unlabeled":
                lab = np.zeros(shape, np.uint8)
                lab[4:10, 4:10, 2:6] = 1
                if num_classes > 2:
                    lab[6:8, 6:8, 3:5] = num_classes - 1
                _nii(root / "labels" / f"{cid}.nii.gz", lab, spacing)
                item["label"] = f"labels/{cid}.nii.gz"
            items.append(item)
            k += 1
        content[split] = items
    (root / "datalist.json").write_text(json.dumps(content))
    return root


def _edit(root: Path, fn) -> None:
    d = json.loads((root / "datalist.json").read_text())
    fn(d)
    (root / "datalist.json").write_text(json.dumps(d))


def _mha(path: Path, arr: np.ndarray) -> Path:
    """A MetaImage (.mha) volume of an (X, Y, Z) float32 array, written by hand (no ITK writer needed)."""
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"DimSize = {' '.join(str(s) for s in arr.shape)}\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.asarray(arr, "<f4").transpose(2, 1, 0).tobytes())
    return path


# ----------------------------------------------------------------------------------------------------------------------
# datalists and checks
# ----------------------------------------------------------------------------------------------------------------------


def test_valid_dataset_loads_with_absolute_paths_and_spacing(volumes, tmp_path, caplog):
    root = make_dataset(tmp_path / "a")
    _edit(root, lambda d: d["labeled"][1].update(spacing=[1.0, 1.0, 3.0]))
    with caplog.at_level(logging.INFO):
        items = volumes.load_datalist(str(root), "labeled")
    assert "checking 2 labeled items of" in caplog.text
    assert len(items) == 2 and all(Path(i["image"]).is_absolute() and Path(i["label"]).is_file() for i in items)
    assert items[0]["spacing"] == [0.5, 0.5, 2.0] and items[1]["spacing"] == [1.0, 1.0, 3.0]  # an item's own wins
    unl = volumes.load_datalist(str(root), "unlabeled")
    assert len(unl) == 2 and "label" not in unl[0] and unl[0]["spacing"] == [0.5, 0.5, 2.0]
    assert len(volumes.load_datalist(str(root), "test", limit=1)) == 1
    _edit(root, lambda d: d.update(test=[]))
    assert volumes.load_datalist(str(root), "test") == [] and volumes.load_datalist(str(root), "nonexistent") == []
    unknown = make_dataset(tmp_path / "b", spacing_known=False)
    _edit(unknown, lambda d: d["labeled"][0].update(spacing=[1.0, 1.0, 1.0]))
    assert all("spacing" not in i for i in volumes.load_datalist(str(unknown), "labeled"))


def test_check_datalist_caches_and_rechecks_changed_files(volumes, tmp_path, monkeypatch):
    root = make_dataset(tmp_path)
    reads = []
    real = volumes._read_volume
    monkeypatch.setattr(volumes, "_read_volume", lambda p, w: reads.append(p) or real(p, w))
    content = volumes.check_datalist(root / "datalist.json")
    assert len(reads) == 14 and content["name"] == "tiny"  # 8 images + 6 labels, each read once
    assert volumes.check_datalist(root / "datalist.json") is content and len(reads) == 14  # cached
    (root / "images" / "c000.nii.gz").write_bytes(b"")  # a file changed: the check is redone
    with pytest.raises(volumes.DataError, match=r"empty \(0 bytes\).*c000.nii.gz"):
        volumes.check_datalist(root / "datalist.json")


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


DEFECTS = {
    # defect: (message regex, the file the message must name)
    "missing": ("not found", "image"),
    "zero_bytes": (r"empty \(0 bytes\)", "image"),
    "truncated_gzip": ("cannot be read", "image"),
    "garbage": ("cannot be read", "image"),
    "missing_label": ("not found", "label"),
    "truncated_label": ("cannot be read", "label"),
    "shape_mismatch": ("differs from its image shape", "label"),
    "label_out_of_range": (r"values \[5\] outside the declared classes 0\.\.1", "label"),
    "label_non_integer": (r"values \[0\.5\] outside the declared classes", "label"),
    "label_one_hot": ("one map of class indices", "label"),
    "image_2d": ("expects 3D volumes", "image"),
    "png_image": ("2D image file.*expects 3D volumes", "image"),
    "multichannel": ("2 channels.*single-channel.*wrong channel count", "image"),
    "nan": ("NaN or infinite", "image"),
    "inf": ("NaN or infinite", "image"),
    "truncated_mha": ("cannot be read", "image"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_bad_files_are_named(volumes, tmp_path, defect):
    root = make_dataset(tmp_path)
    img, lab = root / "images" / "c000.nii.gz", root / "labels" / "c000.nii.gz"
    message, which = DEFECTS[defect]
    bad = img if which == "image" else lab
    vol = np.zeros(SHAPE, np.float32)
    if defect in ("missing", "missing_label"):
        bad.unlink()
    elif defect == "zero_bytes":
        img.write_bytes(b"")
    elif defect in ("truncated_gzip", "truncated_label"):
        if bad == lab:  # labels compress well: make the file long enough for its header to survive the cut
            _nii(lab, np.random.default_rng(2).integers(0, 2, SHAPE, dtype=np.uint8))
        _truncate(bad)
        with pytest.raises((EOFError, OSError, ValueError)):  # a truncated gzip fails only when its data are read
            gzip.decompress(bad.read_bytes())
        assert nib.load(str(bad)).shape == SHAPE  # ... while the header still reads
    elif defect == "garbage":
        img.write_bytes(np.random.default_rng(1).integers(0, 255, 999, dtype=np.uint8).tobytes())
    elif defect == "shape_mismatch":
        _nii(lab, np.zeros((16, 16, 7), np.uint8))
    elif defect == "label_out_of_range":
        _nii(lab, np.full(SHAPE, 5, np.uint8))
    elif defect == "label_non_integer":
        _nii(lab, np.full(SHAPE, 0.5, np.float32))
    elif defect == "label_one_hot":
        _nii(lab, np.zeros((*SHAPE, 2), np.uint8))
    elif defect == "image_2d":
        _nii(img, np.zeros((16, 16), np.float32))
    elif defect == "png_image":
        from PIL import Image

        bad = root / "images" / "c000.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
        _edit(root, lambda d: d["labeled"][0].update(image="images/c000.png"))
    elif defect == "multichannel":
        _nii(img, np.zeros((*SHAPE, 2), np.float32))
    elif defect in ("nan", "inf"):
        vol[3, 3, 3] = np.nan if defect == "nan" else np.inf
        _nii(img, vol)
    elif defect == "truncated_mha":
        bad = _mha(root / "images" / "c000.mha", vol)
        _truncate(bad)
        _edit(root, lambda d: d["labeled"][0].update(image="images/c000.mha"))
    with pytest.raises(volumes.DataError, match=message) as err:
        volumes.load_datalist(str(root), "labeled")
    assert str(bad) in str(err.value)


def test_other_formats_and_singleton_channel_are_accepted(volumes, tmp_path):
    root = make_dataset(tmp_path)
    ramp = np.arange(np.prod(SHAPE), dtype=np.float32).reshape((*SHAPE, 1))
    _nii(root / "images" / "c000.nii.gz", ramp)  # trailing channel axis of size 1
    arr = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    _mha(root / "images" / "c001.mha", arr)  # NRRD/MHA go through MONAI's ITK reader
    _edit(root, lambda d: d["labeled"][1].update(image="images/c001.mha"))
    items = volumes.load_datalist(str(root), "labeled")
    assert items[1]["image"].endswith("c001.mha")
    np.testing.assert_array_equal(volumes._read_volume(Path(items[1]["image"]), "image"), arr)  # (X, Y, Z) as NIfTI
    _nii(root / "labels" / "c000.nii.gz", np.full(SHAPE, 3, np.uint8))
    volumes.load_datalist(str(root), "labeled", num_classes=4)  # the declared classes bound the label values


def test_bad_datalists_are_named(volumes, tmp_path):
    def fresh(name):
        return make_dataset(tmp_path / name, n=1)

    with pytest.raises(volumes.DataError, match="datalist not found.*nowhere"):
        volumes.load_datalist(str(tmp_path / "nowhere"), "labeled")
    root = fresh("json")
    (root / "datalist.json").write_text("{not json")
    with pytest.raises(volumes.DataError, match="not valid JSON.*datalist.json"):
        volumes.check_datalist(root / "datalist.json")
    root = fresh("array")
    (root / "datalist.json").write_text("[]")
    with pytest.raises(volumes.DataError, match="must be a JSON object.*datalist.json"):
        volumes.check_datalist(root / "datalist.json")
    cases = {
        "empty": (lambda d: d.update(labeled=[]), r"'labeled' list of .*datalist.json is missing or empty"),
        "absent": (lambda d: d.pop("labeled"), r"'labeled' list of .*datalist.json is missing or empty"),
        "no_image": (lambda d: d["validation"][0].pop("image"), r"item of 'validation' in .*datalist.json has no 'image'"),
        "no_label": (lambda d: d["labeled"][0].pop("label"), r"item of 'labeled' in .*datalist.json has no 'label'"),
        "overlap_image": (lambda d: d["unlabeled"].append({"image": d["labeled"][0]["image"]}),
                          r"image images/c000.nii.gz is in both the 'labeled' and the 'unlabeled' lists of .*datalist"),
        "overlap_case": (lambda d: d["test"][0].update(case=d["validation"][0]["case"]),
                         r"case c002 is in both the 'validation' and the 'test' lists of .*datalist.json"),
        "not_list": (lambda d: d.update(unlabeled={"image": "x"}), r"'unlabeled' in .*datalist.json must be a list"),
        "bad_spacing": (lambda d: d.update(spacing=[1.0, 1.0]), r"'spacing' in .*datalist.json must be 3 positive"),
    }
    for name, (fn, message) in cases.items():
        root = fresh(name)
        _edit(root, fn)
        with pytest.raises(volumes.DataError, match=message):
            volumes.load_datalist(str(root), "labeled")
    # validation and test may share cases when the preparation tool says so (--test_from val)
    root = fresh("shared_eval")
    _edit(root, lambda d: d.update(test=d["validation"], split={"test_from": "val"}))
    assert len(volumes.load_datalist(str(root), "test")) == 1


def test_phantom_generation(volumes, tmp_path):
    items = volumes.load_datalist(str(tmp_path / "acdc"), "labeled", num_classes=4, generate_phantom=True,
                               phantom_kind="acdc", limit=1)
    assert len(items) == 1 and items[0]["spacing"] == [1.5, 1.5, 8.0]
    assert nib.load(items[0]["image"]).shape == (128, 128, 10)


def test_list_volumes(volumes, tmp_path):
    root = make_dataset(tmp_path, n=1)
    (root / "images" / "notes.txt").write_text("not a volume")
    _mha(root / "images" / "extra.mha", np.zeros(SHAPE, np.float32))
    found = volumes.list_volumes(str(root / "images"))
    assert len(found) == 5 and all(set(f) == {"image"} for f in found)
    assert volumes.list_volumes([root / "images" / "c000.nii.gz"]) == [{"image": str(root / "images" / "c000.nii.gz")}]
    with pytest.raises(volumes.DataError, match="not found.*missing.nii.gz"):
        volumes.list_volumes(str(root / "missing.nii.gz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(volumes.DataError, match="no volumes.*empty"):
        volumes.list_volumes(str(tmp_path / "empty"))
    with pytest.raises(volumes.DataError, match="not a volume file.*notes.txt"):
        volumes.list_volumes(str(root / "images" / "notes.txt"))


# ----------------------------------------------------------------------------------------------------------------------
# slice dataset
# ----------------------------------------------------------------------------------------------------------------------


def test_slice_dataset_items_match_the_volumes(volumes, tfm, tmp_path):
    root = make_dataset(tmp_path, num_classes=4)
    lab_items = volumes.load_datalist(str(root), "labeled", num_classes=4)
    unl_items = volumes.load_datalist(str(root), "unlabeled", num_classes=4)
    ds = volumes.SliceDataset(lab_items + unl_items[:1])
    assert len(ds) == 3 * SHAPE[2] and len(ds.data) == len(ds)
    vol = nib.load(lab_items[1]["image"]).get_fdata().astype(np.float32)
    lab = np.asarray(nib.load(lab_items[1]["label"]).dataobj)
    item = ds[SHAPE[2] + 3]  # volume 1, slice 3
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 16, 16) and item["label"].dtype == torch.uint8
    assert item["case"] == "c001" and item["slice"] == 3
    np.testing.assert_array_equal(item["image"][0].numpy(), vol[..., 3])
    np.testing.assert_array_equal(item["label"][0].numpy(), lab[..., 3])
    last = ds[len(ds) - 1]
    assert "label" not in last and last["case"] == unl_items[0]["case"] and last["slice"] == SHAPE[2] - 1
    item["image"] += 100  # items are copies: the stored volumes stay intact
    np.testing.assert_array_equal(ds[SHAPE[2] + 3]["image"][0].numpy(), vol[..., 3])
    assert len(volumes.SliceDataset(lab_items, min_foreground=1)) == 2 * 4  # only slices 2..5 hold foreground
    assert len(ds[2:5]) == 3
    aug = volumes.SliceDataset(lab_items, transform=tfm.acdc_train_transforms(size=(24, 24)))
    aug.transform.set_random_state(seed=0)
    out = aug[0]
    assert out["image"].shape == (1, 24, 24) and out["label"].shape == (1, 24, 24)
    assert set(torch.as_tensor(out["label"]).unique().tolist()) <= {0, 1, 2, 3}
    assert len(volumes.SliceDataset([], transform=aug.transform)) == 0


# ----------------------------------------------------------------------------------------------------------------------
# the multi-stream loader
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def la_streams(volumes, tfm, tmp_path):
    from monai.data import CacheDataset

    root = make_dataset(tmp_path, n=4)
    lab = CacheDataset(volumes.load_datalist(str(root), "labeled"), tfm.la_train_transforms(roi_size=ROI), progress=False)
    unl = CacheDataset(volumes.load_datalist(str(root), "unlabeled"), tfm.la_unlabeled_transforms(roi_size=ROI),
                       progress=False)
    return lab, unl


def _take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in keys)


def test_multi_stream_batches_determinism_and_exact_resume(data, la_streams):
    lab, unl = la_streams
    keys = ("image", "label", *data.UNLABELED_KEYS, *data.MIX_KEYS)
    assert data.UNLABELED_KEYS == ("unlabeled_image", "unlabeled_image_s1", "unlabeled_image_s2")
    assert data.MIX_KEYS == ("mix_image", "mix_image_s1", "mix_image_s2")
    assert {"UNLABELED", "MIX", "MultiStreamLoader"} <= set(data.__all__)
    loader = data.MultiStreamLoader(lab, unl, batch_size=2, seed=5)
    ref = _take(loader, 4)
    for b in ref:
        assert set(keys) <= set(b)
        assert all(tuple(b[k].shape) == (2, 1, *ROI) for k in keys)
    assert loader.state_dict() == {"consumed": 4}
    # the strong views differ from the weak one; the mix stream is not the unlabelled stream
    assert any(not torch.equal(b["unlabeled_image_s1"], b["unlabeled_image"]) for b in ref)
    assert any(not torch.equal(b["mix_image"], b["unlabeled_image"]) for b in ref)
    # same seed, same batches; another seed, other batches
    again = _take(data.MultiStreamLoader(lab, unl, batch_size=2, seed=5), 2)
    assert all(_same(a, b, keys) for a, b in zip(again, ref[:2]))
    other = _take(data.MultiStreamLoader(lab, unl, batch_size=2, seed=6), 2)
    assert not all(_same(a, b, keys) for a, b in zip(other, ref[:2]))
    # consume 3, save, restore in a new loader: its next batch is the uninterrupted run's 4th
    first = data.MultiStreamLoader(lab, unl, batch_size=2, seed=5)
    _take(first, 3)
    state = first.state_dict()
    assert state == {"consumed": 3}
    resumed = data.MultiStreamLoader(lab, unl, batch_size=2, seed=5)
    resumed.load_state_dict(state)
    assert _same(next(iter(resumed)), ref[3], keys)


def test_multi_stream_fallbacks(data, volumes, tfm, la_streams, caplog):
    from monai.data import CacheDataset

    lab, _ = la_streams
    keys = (*data.UNLABELED_KEYS, *data.MIX_KEYS)
    # an empty unlabelled dataset: the labelled items without labels, through its (unlabelled) transform
    empty = CacheDataset([], tfm.la_unlabeled_transforms(roi_size=ROI), progress=False)
    with caplog.at_level(logging.WARNING):
        loader = data.MultiStreamLoader(lab, empty, batch_size=2, seed=1)
    assert "no unlabelled data" in caplog.text
    assert all("label" not in d for d in loader._source.data)
    batches = _take(loader, 2)
    assert all(tuple(b[k].shape) == (2, 1, *ROI) for b in batches for k in keys)
    assert any(not torch.equal(b["unlabeled_image_s1"], b["unlabeled_image"]) for b in batches)
    # no unlabelled dataset at all: the labelled stream's images, strong views = copies of the weak image
    b = next(iter(data.MultiStreamLoader(lab, None, batch_size=2, seed=1)))
    assert set(keys) <= set(b) and torch.equal(b["unlabeled_image_s2"], b["unlabeled_image"])
    assert b["unlabeled_image_s2"].data_ptr() != b["unlabeled_image"].data_ptr()
    # supervised baseline: only the labelled keys
    only = next(iter(data.MultiStreamLoader(lab, None, batch_size=2, fallback=False)))
    assert {"image", "label"} <= set(only) and not set(keys) & set(only)
    with pytest.raises(volumes.DataError, match="labelled stream is empty"):
        data.MultiStreamLoader([], batch_size=2)


def test_multi_stream_with_slices(data, volumes, tfm, tmp_path):
    root = make_dataset(tmp_path, num_classes=4)
    lab = volumes.SliceDataset(volumes.load_datalist(str(root), "labeled", num_classes=4),
                            transform=tfm.acdc_train_transforms(size=(24, 24)))
    unl_tf = tfm.acdc_unlabeled_transforms(size=(24, 24))
    unl = volumes.SliceDataset(volumes.load_datalist(str(root), "unlabeled", num_classes=4), transform=unl_tf)
    b = next(iter(data.MultiStreamLoader(lab, unl, batch_size=3, seed=0)))
    assert b["image"].shape == (3, 1, 24, 24) and b["label"].shape == (3, 1, 24, 24)
    assert all(b[k].shape == (3, 1, 24, 24) for k in (*data.UNLABELED_KEYS, *data.MIX_KEYS))
    assert len(b["case"]) == 3 and b["slice"].shape == (3,)
    fallback = data.MultiStreamLoader(lab, volumes.SliceDataset([], transform=unl_tf), batch_size=3, seed=0)
    assert isinstance(fallback._source, volumes.SliceDataset) and fallback._source.transform is unl_tf
    assert "label" not in fallback._source[0]
    assert next(iter(fallback))["mix_image_s1"].shape == (3, 1, 24, 24)


def test_distributed_shares_are_disjoint(data):
    sampler = importlib.import_module("scripts.common.sampling").SeededSampler  # the bundle's: numpy's draws

    def first_pass(size, rank, world):
        it = iter(sampler(size, seed=3, rank=rank, world=world, scheme="numpy"))
        return [next(it) for _ in range(max(size // world, 1))]

    r0, r1 = first_pass(10, 0, 2), first_pass(10, 1, 2)
    assert sorted(i for i, _ in r0 + r1) == list(range(10))  # disjoint shares of one pass
    assert {s for _, s in r0}.isdisjoint({s for _, s in r1})  # and their own augmentation seeds
    assert len(first_pass(1, 1, 2)) == 1  # fewer items than ranks: the pass is tiled
    it = iter(sampler(10, seed=3, start=7, rank=1, world=2, scheme="numpy"))
    full = iter(sampler(10, seed=3, rank=1, world=2, scheme="numpy"))
    assert [next(it) for _ in range(4)] == [next(full) for _ in range(11)][7:]  # replayable from any position


# ----------------------------------------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------------------------------------


def _prepare_tool():
    spec = importlib.util.spec_from_file_location("prepare_data_tool", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_data_tool"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.realdata
def test_real_la_and_acdc(volumes, shared_data, tmp_path):
    pdt = _prepare_tool()
    la = pdt.la(str(shared_data / "LA"), str(tmp_path / "la"), num_labeled=8, test_from="val")
    content = volumes.check_datalist(la)
    assert len(content["labeled"]) == 8 and content["test"] == content["validation"]
    items = volumes.load_datalist(str(tmp_path / "la"), "labeled")
    assert items[0]["spacing"] == [0.625, 0.625, 0.625] and Path(items[0]["image"]).is_file()
    acdc = pdt.acdc(str(shared_data / "ACDC"), str(tmp_path / "acdc"), labeled_patients=3)
    volumes.check_datalist(acdc, num_classes=4)
    labeled = volumes.load_datalist(str(tmp_path / "acdc"), "labeled", num_classes=4)
    assert all("spacing" not in i for i in labeled)  # not stored in the ACDC files
    ds = volumes.SliceDataset(labeled)
    assert len(ds) == 68  # the 3-patient split's labelled slices
    values = set()
    for k in range(0, len(ds), 7):
        item = ds[k]
        assert item["image"].ndim == 3 and item["image"].shape[0] == 1
        assert item["label"].shape == item["image"].shape and item["label"].dtype == torch.uint8
        values |= set(item["label"].unique().tolist())
    assert values <= {0, 1, 2, 3} and {1, 2, 3} <= values
