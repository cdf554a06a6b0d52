# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Input checks of the Switch bundle: every bad input is a clear DataError naming the file, before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_bundle
from PIL import Image

import_bundle("switch_us")
from scripts.common.images2d import DataError, TwoStreamLoader, check_datalist, list_images, load_datalist  # noqa: E402
from scripts.common.run_folder import FINISHED_MARKER, resolve_run_dir  # noqa: E402


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_dataset(root: Path, n: int = 4, size: int = 16) -> Path:
    """A valid tiny dataset: 4 cases per split."""
    rng = np.random.default_rng(0)
    content = {"name": "tiny", "labels": {"0": "background", "1": "lesion"}}
    k = 0
    for split in ("labeled", "unlabeled", "validation", "test"):
        items = []
        for _ in range(n):
            cid = f"c{k:03d}"
            k += 1
            _png(root / "images" / f"{cid}.png", rng.integers(0, 255, (size, size), dtype=np.uint8))
            item = {"image": f"images/{cid}.png", "case": cid}
            if split != "unlabeled":
                lab = np.zeros((size, size), np.uint8)
                lab[4:9, 4:9] = 1
                _png(root / "labels" / f"{cid}.png", lab)
                item["label"] = f"labels/{cid}.png"
            items.append(item)
        content[split] = items
    (root / "datalist.json").write_text(json.dumps(content))
    return root


def _edit(root: Path, fn) -> None:
    d = json.loads((root / "datalist.json").read_text())
    fn(d)
    (root / "datalist.json").write_text(json.dumps(d))


def test_valid_dataset_loads(tmp_path):
    root = make_dataset(tmp_path)
    items = load_datalist(str(root), "labeled")
    assert len(items) == 4 and Path(items[0]["image"]).is_absolute() and Path(items[0]["label"]).exists()
    assert load_datalist(str(root), "unlabeled")[0].keys() >= {"image"}


@pytest.mark.parametrize(
    "defect, message",
    [
        ("missing", "not found"),
        ("zero_bytes", r"empty \(0 bytes\)"),
        ("truncated", "cannot be read"),
        ("size_mismatch", "differs from its image size"),
        ("bad_values", "outside the declared classes"),
        ("volume", "2D"),
        ("channels", "channels"),
    ],
)
def test_bad_files_are_named(tmp_path, defect, message):
    root = make_dataset(tmp_path)
    img = root / "images" / "c000.png"
    lab = root / "labels" / "c000.png"
    bad = img
    if defect == "missing":
        img.unlink()
    elif defect == "zero_bytes":
        img.write_bytes(b"")
    elif defect == "truncated":
        img.write_bytes(img.read_bytes()[:40])
    elif defect == "size_mismatch":
        _png(lab, np.zeros((20, 16), np.uint8))
        bad = lab
    elif defect == "bad_values":
        _png(lab, np.full((16, 16), 255, np.uint8))
        bad = lab
    elif defect == "volume":
        import nibabel as nib

        vol = root / "images" / "c000.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), np.eye(4)), vol)
        _edit(root, lambda d: d["labeled"][0].update(image="images/c000.nii.gz"))
        bad = vol
    elif defect == "channels":
        import nibabel as nib

        vol = root / "images" / "c000.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((16, 16, 2), np.float32), np.eye(4)), vol)
        _edit(root, lambda d: d["labeled"][0].update(image="images/c000.nii.gz"))
        bad = vol
    with pytest.raises(DataError, match=message) as err:
        load_datalist(str(root), "labeled")
    assert bad.name in str(err.value)


def test_nan_image_is_rejected(tmp_path):
    import nibabel as nib

    root = make_dataset(tmp_path)
    arr = np.zeros((16, 16), np.float32)
    arr[3, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), root / "images" / "c000.nii.gz")
    _edit(root, lambda d: d["labeled"][0].update(image="images/c000.nii.gz"))
    with pytest.raises(DataError, match="NaN"):
        load_datalist(str(root), "labeled")


def test_bad_datalists(tmp_path):
    root = make_dataset(tmp_path)
    (root / "datalist.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        check_datalist(root / "datalist.json")
    root = make_dataset(tmp_path / "b")
    _edit(root, lambda d: d.update(labeled=[]))
    with pytest.raises(DataError, match="'labeled' list .* empty"):
        load_datalist(str(root), "labeled")
    root = make_dataset(tmp_path / "c")
    _edit(root, lambda d: d["unlabeled"].append(dict(d["labeled"][0])))
    with pytest.raises(DataError, match="both the 'labeled' and the 'unlabeled'"):
        load_datalist(str(root), "labeled")
    with pytest.raises(DataError, match="datalist not found"):
        load_datalist(str(tmp_path / "nowhere"), "labeled")


def test_list_images(tmp_path):
    root = make_dataset(tmp_path)
    assert len(list_images(str(root / "images"))) == 16
    assert len(list_images([str(root / "images" / "c000.png")])) == 1
    with pytest.raises(DataError, match="not found"):
        list_images(str(root / "missing.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_images(str(tmp_path / "empty"))


def test_two_stream_loader_cycles_both_streams_and_replays():
    lab = [{"image": torch.full((1, 2, 2), float(i)), "label": torch.zeros(1, 2, 2)} for i in range(3)]
    unl = [{"image": torch.full((1, 2, 2), 10.0 + i)} for i in range(5)]
    loader = TwoStreamLoader(lab, unl, batch_size=2, seed=3)
    it = iter(loader)
    batches = [next(it) for _ in range(7)]
    assert all(b["image"].shape == (2, 1, 2, 2) and b["unlabeled_image"].shape == (2, 1, 2, 2) for b in batches)
    assert all(b["unlabeled_image"].min() >= 10 for b in batches)
    seen = torch.cat([b["image"].flatten() for b in batches[:3]]).unique()
    assert set(seen.tolist()) == {0.0, 1.0, 2.0}  # every labelled image comes round
    # a loader restored at position 4 yields exactly batches 4, 5, 6
    resumed = TwoStreamLoader(lab, unl, batch_size=2, seed=3)
    resumed.load_state_dict({"consumed": 4})
    it2 = iter(resumed)
    for b in batches[4:]:
        r = next(it2)
        assert torch.equal(r["image"], b["image"]) and torch.equal(r["unlabeled_image"], b["unlabeled_image"])
    assert loader.state_dict() == {"consumed": 7}
    with pytest.raises(DataError, match="empty"):
        TwoStreamLoader([], batch_size=2)
    only = iter(TwoStreamLoader(lab, None, batch_size=2, fallback=False))
    assert "unlabeled_image" not in next(only)


def test_finished_runs_are_never_overwritten(tmp_path):
    first = Path(resolve_run_dir(str(tmp_path), "run"))
    (first / "model.pt").write_text("weights")
    assert Path(resolve_run_dir(str(tmp_path), "run")) == first  # unfinished: resumed in place
    (first / FINISHED_MARKER).touch()
    second = Path(resolve_run_dir(str(tmp_path), "run"))
    assert second == tmp_path / "run_2" and (first / "model.pt").read_text() == "weights"
    again = Path(resolve_run_dir(str(tmp_path), "run", overwrite=True))
    assert again == first and not (first / FINISHED_MARKER).exists()
