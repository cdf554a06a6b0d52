# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The synthetic ultrasound phantoms: deterministic, in the prepared dataset format, learnable."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest
from conftest import import_bundle
from PIL import Image
from scipy import ndimage

import_bundle("switch_us")
from scripts.common.images2d import check_datalist  # noqa: E402
from scripts.common.phantom_us import (  # noqa: E402
    PHANTOM_VERSION,
    ensure_phantom_dataset,
    generate_phantom_dataset,
    render_phantom,
    stratified_kind,
)


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_phantoms_are_deterministic_and_well_formed(tmp_path):
    kw = {"num_labeled": 3, "num_unlabeled": 4, "num_validation": 2, "num_test": 3, "size": 96}
    a = generate_phantom_dataset(tmp_path / "a", seed=0, **kw)
    generate_phantom_dataset(tmp_path / "b", seed=0, **kw)
    generate_phantom_dataset(tmp_path / "c", seed=1, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    content = check_datalist(a if a.name == "datalist.json" else tmp_path / "a" / "datalist.json")
    assert [len(content[k]) for k in ("labeled", "unlabeled", "validation", "test")] == [3, 4, 2, 3]
    assert content["modality"] == "US" and content["labels"] == {"0": "background", "1": "lesion"}
    assert all("label" not in it for it in content["unlabeled"])
    cases = [it["case"] for k in ("labeled", "unlabeled", "validation", "test") for it in content[k]]
    assert len(cases) == len(set(cases))
    fractions, contrasts = [], []
    for it in content["labeled"] + content["test"]:
        img = np.asarray(Image.open(tmp_path / "a" / it["image"]))
        lab = np.asarray(Image.open(tmp_path / "a" / it["label"]))
        assert img.shape == lab.shape == (96, 96) and img.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1}
        fractions.append(lab.mean())
        if lab.any():  # the lesion differs visibly from a ring of tissue around it
            ring = ndimage.binary_dilation(lab > 0, iterations=5) & ~(lab > 0)
            contrasts.append(abs(float(img[lab > 0].mean()) - float(img[ring].mean())))
    assert 0.005 < float(np.mean(fractions)) < 0.2
    assert contrasts and float(np.median(contrasts)) > 10


def test_ensure_generates_once(tmp_path):
    root = tmp_path / "ph"
    ensure_phantom_dataset(str(root), num_labeled=2, num_unlabeled=2, num_validation=1, num_test=1, size=64)
    stamp = (root / "datalist.json").stat().st_mtime_ns
    ensure_phantom_dataset(str(root), num_labeled=2, num_unlabeled=2, num_validation=1, num_test=1, size=64)
    assert (root / "datalist.json").stat().st_mtime_ns == stamp
    assert json.loads((root / "datalist.json").read_text())["name"]


def test_test_images_do_not_depend_on_other_split_sizes(tmp_path):
    small = {"num_labeled": 1, "num_unlabeled": 1, "num_validation": 1, "num_test": 2, "size": 64}
    generate_phantom_dataset(tmp_path / "a", **small)
    generate_phantom_dataset(tmp_path / "b", **{**small, "num_unlabeled": 3, "num_labeled": 2})
    for name in ("test_0000.png", "test_0001.png"):
        for sub in ("images", "labels"):
            assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "b" / sub / name).read_bytes()


def test_labelled_split_is_stratified_by_lesion_kind(tmp_path):
    kinds = [stratified_kind(j) for j in range(16)]
    assert [kinds.count(k) for k in ("hypoechoic", "cyst", "hyperechoic")] == [9, 2, 5]
    for n in range(5, 41):  # every prefix holds each kind within 1.5 images of its expected count
        prefix = [stratified_kind(j) for j in range(n)]
        for kind, p in (("hypoechoic", 0.55), ("cyst", 0.15), ("hyperechoic", 0.30)):
            assert abs(prefix.count(kind) - p * n) <= 1.5, (n, kind)
    root = generate_phantom_dataset(tmp_path / "ph", num_labeled=16, num_unlabeled=2, num_validation=0, num_test=8,
                                    size=64)
    recorded = json.loads((root / "datalist.json").read_text())["lesion_kinds"]
    assert sorted(recorded) == ["labeled", "test"] and len(recorded["test"]) == 8  # unlabelled kinds stay unrecorded
    assert [k if r == "none" else r for k, r in zip(kinds, recorded["labeled"])] == kinds
    for split, split_kinds in recorded.items():
        for j, kind in enumerate(split_kinds):  # the lesion is brighter than its surroundings iff it is hyperechoic
            image = np.asarray(Image.open(root / "images" / f"{split}_{j:04d}.png"), dtype=float)
            lesion = np.asarray(Image.open(root / "labels" / f"{split}_{j:04d}.png")) > 0
            assert lesion.any() == (kind != "none"), (split, j, kind)
            if lesion.any():
                ring = ndimage.binary_dilation(lesion, iterations=4) & ~lesion
                assert (image[lesion].mean() > image[ring].mean()) == (kind == "hyperechoic"), (split, j, kind)
    with pytest.raises(ValueError, match="kind"):
        render_phantom(np.random.default_rng(0), size=64, kind="calcified")


def test_ensure_regenerates_a_phantom_dataset_of_another_version(tmp_path):
    root = tmp_path / "ph"
    kw = {"num_labeled": 2, "num_unlabeled": 1, "num_validation": 1, "num_test": 1, "size": 48}
    ensure_phantom_dataset(root, **kw)
    fresh = _digest(root)
    datalist = json.loads((root / "datalist.json").read_text())
    datalist["source"]["version"] = PHANTOM_VERSION - 1
    (root / "datalist.json").write_text(json.dumps(datalist))
    (root / "images" / "labeled_0000.png").write_bytes(b"stale")
    ensure_phantom_dataset(root, **kw)
    assert json.loads((root / "datalist.json").read_text())["source"]["version"] == PHANTOM_VERSION
    assert _digest(root) == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ph"]  # the stale copy is gone
    (root / "datalist.json").write_text("{not json")  # not ours to judge: left for the data checks to report
    assert ensure_phantom_dataset(root, **kw) == str(root)
    assert (root / "datalist.json").read_text() == "{not json"


def test_lesions_are_rare_to_miss_and_inside_the_sector():
    empty = 0
    for i in range(120):
        image, label = render_phantom(np.random.default_rng(i), size=64, sector=True)
        empty += not label.any()
        assert image[0, 0] == image[0, -1] == 0  # outside the fan
        fan = ndimage.binary_fill_holes(image > 0)  # the field of view (dark speckle inside it filled)
        assert not (label.astype(bool) & ~fan).any()
    assert empty <= 0.08 * 120


def test_overwrite_rules(tmp_path):
    kw = {"num_labeled": 2, "num_unlabeled": 1, "num_validation": 1, "num_test": 1, "size": 48}
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        generate_phantom_dataset(user, overwrite=True, **kw)  # not a phantom dataset: never touched
    assert (user / "mine.txt").read_text() == "precious"
    with pytest.raises(FileExistsError):
        ensure_phantom_dataset(user, **kw)

    ph = generate_phantom_dataset(tmp_path / "ph", **kw)
    with pytest.raises(FileExistsError):
        generate_phantom_dataset(ph, **kw)
    generate_phantom_dataset(ph, overwrite=True, **{**kw, "num_labeled": 1})
    assert sorted(p.name for p in (ph / "images").iterdir()) == [
        "labeled_0000.png", "test_0000.png", "unlabeled_0000.png", "validation_0000.png"]  # no stale files


def test_ensure_is_safe_when_called_concurrently(tmp_path):
    root = tmp_path / "data" / "phantom"
    kw = {"num_labeled": 2, "num_unlabeled": 2, "num_validation": 1, "num_test": 1, "size": 48}
    results, errors = [], []

    def call():
        try:
            results.append(ensure_phantom_dataset(root, **kw))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [str(root)] * 3
    assert sorted(p.name for p in root.parent.iterdir()) == ["phantom"]  # no temporary folder left behind
    content = check_datalist(root / "datalist.json")
    assert len(content["labeled"]) == 2 and all((root / it["image"]).is_file() for it in content["unlabeled"])
