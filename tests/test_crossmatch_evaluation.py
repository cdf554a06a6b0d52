# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""3D evaluation (crossmatch_3d): metrics against hand computations, and the report handler on a real evaluator."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import import_bundle

MM = [0.5, 0.75, 2.0]  # anisotropic voxel spacing (x, y, z) in mm


@pytest.fixture(scope="module")
def ev():
    """crossmatch_3d's copy of the common metrics and report modules, as one namespace; the previously imported
    ``scripts`` package is restored after."""
    saved_modules = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    saved_path = list(sys.path)
    import_bundle("crossmatch_3d")
    from scripts.common import metrics, reports

    assert "crossmatch_3d" in metrics.__file__ and "crossmatch_3d" in reports.__file__
    yield types.SimpleNamespace(**{**vars(metrics), **vars(reports)})
    for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
        del sys.modules[k]
    sys.modules.update(saved_modules)
    sys.path[:] = saved_path


def _cube(shape, start, side) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + side) for s in start)] = True
    return m


def _brute_surface(m: np.ndarray) -> np.ndarray:
    """Coordinates of mask voxels with a face neighbour outside the mask or the volume."""
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(p, shift, axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(m & ~inner).astype(float)


def _brute_distances(a: np.ndarray, b: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    sa, sb = _brute_surface(a), _brute_surface(b)
    scale = np.ones(3) if spacing is None else np.asarray(spacing, float)
    d = np.sqrt((((sa[:, None, :] - sb[None, :, :]) * scale) ** 2).sum(-1))
    return d.min(1), d.min(0)  # a -> b, b -> a


def test_dice_iou_of_overlapping_cubes(ev):
    gt = _cube((16, 16, 16), (2, 2, 2), 4)  # 64 voxels
    pred = _cube((16, 16, 16), (2, 2, 4), 4)  # shifted 2 along z: overlap 4 x 4 x 2 = 32
    m = ev.class_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 32 / 128)
    assert m["iou"] == pytest.approx(32 / 96)
    assert list(m) == ["dice", "iou", "hd95", "hd95_pooled", "asd"]  # no spacing: voxel units only
    pred2 = _cube((16, 16, 16), (3, 3, 3), 4)  # shifted by 1 on every axis: overlap 3^3 = 27
    b = ev.binary_metrics(torch.as_tensor(pred2.astype(np.uint8)), gt.astype(np.int64))
    assert b["dice"] == pytest.approx(54 / 128) and b["iou"] == pytest.approx(27 / 101)
    same = ev.class_metrics(gt, gt, spacing=MM)
    assert same["dice"] == 1.0 and same["iou"] == 1.0
    assert same["hd95"] == same["hd95_pooled"] == same["asd"] == same["hd95_mm"] == same["asd_mm"] == 0.0


def test_plates_shifted_along_z_in_voxels_and_mm(ev):
    """One-voxel-thick plates 3 slices apart: every surface distance is exactly 3 voxels = 3 x 2.0 mm."""
    gt = np.zeros((12, 12, 10), bool)
    gt[2:9, 3:10, 2] = True
    pred = np.roll(gt, 3, axis=2)
    m = ev.class_metrics(pred, gt, spacing=MM)
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    for key in ("hd95", "hd95_pooled", "asd"):
        assert m[key] == pytest.approx(3.0)
        assert m[key + "_mm"] == pytest.approx(6.0)
    # the same plates shifted along x (0.5 mm voxels)
    gx = np.zeros((12, 12, 10), bool)
    gx[2, 3:10, 1:8] = True
    mx = ev.class_metrics(np.roll(gx, 3, axis=0), gx, spacing=MM)
    assert mx["hd95"] == pytest.approx(3.0) and mx["hd95_mm"] == pytest.approx(1.5) and mx["asd_mm"] == pytest.approx(1.5)


def test_shifted_cubes_hd95_and_asd(ev):
    """A 6-cube shifted 3 voxels along z: the 36 voxels of the far face (24% of the 152 surface voxels) lie exactly 3
    voxels (6 mm) from the other surface and no voxel is farther, so both HD95 variants are 3 voxels / 6 mm."""
    gt = _cube((16, 16, 16), (4, 4, 2), 6)
    pred = _cube((16, 16, 16), (4, 4, 5), 6)
    m = ev.class_metrics(pred, gt, spacing=MM)
    assert m["hd95"] == pytest.approx(3.0) and m["hd95_pooled"] == pytest.approx(3.0)
    assert m["hd95_mm"] == pytest.approx(6.0) and m["hd95_pooled_mm"] == pytest.approx(6.0)
    # ASD: mean over the prediction's surface of the distance to the ground-truth surface, by brute force
    for spacing, suffix in ((None, ""), (MM, "_mm")):
        p2g, _ = _brute_distances(pred, gt, spacing)
        assert len(p2g) == 6**3 - 4**3
        assert m["asd" + suffix] == pytest.approx(p2g.mean(), rel=1e-6)
    assert 0 < m["asd"] < 3


@pytest.mark.parametrize("spacing", [None, MM])
def test_distances_match_brute_force_and_monai(ev, spacing):
    """MONAI HD95 (percentile per direction, then max), pooled HD95 and directed ASD on irregular 3D shapes."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    z, y, x = np.mgrid[0:18, 0:18, 0:14]
    ball = (z - 8) ** 2 + (y - 9) ** 2 + ((x - 7) * 1.3) ** 2 <= 6**2
    blob = ((z - 9) / 5.0) ** 2 + ((y - 8) / 7.0) ** 2 + ((x - 6) / 4.0) ** 2 <= 1
    blob[1:3, 14:17, 10:13] = True  # a distant false-positive island
    a_to_b, b_to_a = _brute_distances(blob, ball, spacing)  # prediction = blob, ground truth = ball
    suffix = "" if spacing is None else "_mm"
    m = ev.class_metrics(blob, ball, spacing=spacing)
    assert m["hd95" + suffix] == pytest.approx(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)), rel=1e-5)
    assert m["hd95_pooled" + suffix] == pytest.approx(np.percentile(np.concatenate([a_to_b, b_to_a]), 95), rel=1e-5)
    assert m["asd" + suffix] == pytest.approx(a_to_b.mean(), rel=1e-5)
    assert m["hd95_pooled" + suffix] <= m["hd95" + suffix] + 1e-6
    assert ev.pooled_hd95(blob, ball, spacing, percentile=100) == pytest.approx(max(a_to_b.max(), b_to_a.max()), rel=1e-5)
    onehot = [torch.stack([torch.as_tensor(~v), torch.as_tensor(v)])[None].float() for v in (blob, ball)]
    assert m["hd95" + suffix] == pytest.approx(float(compute_hausdorff_distance(*onehot, percentile=95, spacing=spacing)))
    assert m["asd" + suffix] == pytest.approx(float(compute_average_surface_distance(*onehot, spacing=spacing)))


def _cardiac_pair() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((20, 20, 6), np.int64)
    label[2:8, 2:8, 1:5] = 1  # 144 voxels
    label[10:16, 10:16, 1:5] = 2  # 144 voxels
    label[12:18, 2:6, 1:5] = 3  # 96 voxels
    pred = label.copy()
    pred[10:16, 13:16, 1:5] = 0  # class 2: half of it missed (72 of 144 voxels kept)
    pred[pred == 3] = 0  # class 3: not predicted at all
    return pred, label


def test_multiclass_per_class_and_mean_columns(ev):
    pred, label = _cardiac_pair()
    names = ["background", "right ventricle", "Myocardium", "left-ventricle"]
    m = ev.segmentation_metrics(pred, label, num_classes=4, class_names=names, spacing=MM)
    metric_keys = ["dice", "iou", "hd95", "hd95_pooled", "asd", "hd95_mm", "hd95_pooled_mm", "asd_mm"]
    classes = ["right_ventricle", "myocardium", "left_ventricle"]
    assert list(m) == metric_keys + [f"{k}_{c}" for c in classes for k in metric_keys]
    assert m["dice_right_ventricle"] == 1.0 and m["hd95_right_ventricle"] == 0.0
    assert m["dice_myocardium"] == pytest.approx(2 * 72 / 216) and m["iou_myocardium"] == pytest.approx(0.5)
    assert m["hd95_myocardium"] == pytest.approx(3.0) and m["hd95_mm_myocardium"] == pytest.approx(3 * 0.75)
    assert m["dice_left_ventricle"] == 0.0 and math.isnan(m["hd95_left_ventricle"])  # "skip": distance undefined
    # the plain columns are the means over the foreground classes (NaN left out)
    assert m["dice"] == pytest.approx((1.0 + 2 * 72 / 216 + 0.0) / 3)
    assert m["iou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["hd95"] == pytest.approx((0.0 + 3.0) / 2)
    nested = ev.multiclass_metrics(pred, label, num_classes=4)
    assert set(nested) == {1, 2, 3} and nested[2]["dice"] == pytest.approx(m["dice_myocardium"])
    # the paper policy scores the missing class 0 everywhere and averages it in
    paper = ev.segmentation_metrics(pred, label, num_classes=4, class_names=names[1:], empty_policy="paper")
    assert paper["hd95_left_ventricle"] == 0.0 and paper["asd_left_ventricle"] == 0.0
    assert paper["hd95"] == pytest.approx(3.0 / 3) and paper["dice"] == pytest.approx(m["dice"])
    default = ev.segmentation_metrics(pred, label, num_classes=4)
    assert "dice_class_1" in default and "dice_class_3" in default and "hd95_mm" not in default
    with pytest.raises(ValueError, match="class_names"):
        ev.segmentation_metrics(pred, label, num_classes=4, class_names=["a", "b"])


@pytest.mark.parametrize("policy", ["skip", "zero", "one", "paper"])
def test_empty_policies(ev, policy):
    shape = (8, 8, 6)
    empty, cube = np.zeros(shape, bool), _cube(shape, (2, 2, 1), 3)
    both = ev.class_metrics(empty, empty, spacing=MM, empty_policy=policy)
    expected = {"skip": math.nan, "zero": 0.0, "one": 1.0, "paper": 0.0}[policy]
    for key in ("dice", "iou"):
        assert both[key] == expected or (math.isnan(expected) and math.isnan(both[key]))
    missed = ev.class_metrics(empty, cube, spacing=MM, empty_policy=policy)  # empty prediction, non-empty label
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0
    distance_keys = ["hd95", "hd95_pooled", "asd", "hd95_mm", "hd95_pooled_mm", "asd_mm"]
    if policy == "paper":  # the CrossMatch LA protocol: all metrics 0, counted in the means
        assert all(both[k] == 0.0 for k in distance_keys) and all(missed[k] == 0.0 for k in distance_keys)
        rows = [{"id": "a", **ev.class_metrics(cube, cube, empty_policy=policy)}, {"id": "b", **missed}]
        s = ev.summarize(rows)
        assert s["dice"] == {"mean": 0.5, "std": 0.5, "count": 2} and s["hd95"]["count"] == 2
    else:
        assert all(math.isnan(both[k]) and math.isnan(missed[k]) for k in distance_keys)
    spurious = ev.class_metrics(cube, empty, spacing=MM, empty_policy=policy)  # false positive everywhere
    assert spurious["dice"] == 0.0 and all(math.isnan(spurious[k]) for k in distance_keys)
    assert math.isnan(ev.pooled_hd95(cube, empty))


def test_invalid_arguments_and_summary(ev):
    empty = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="empty_policy"):
        ev.class_metrics(empty, empty, empty_policy="maybe")
    with pytest.raises(ValueError, match="shape"):
        ev.class_metrics(empty, np.zeros((4, 4, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        ev.class_metrics(empty, empty, spacing=[1.0, 1.0])
    s = ev.summarize([{"id": "x", "dice": 0.5, "hd95": math.nan}, {"id": "y", "dice": 1.0, "hd95": 2.0}])
    assert s["dice"] == {"mean": 0.75, "std": 0.25, "count": 2} and s["hd95"] == {"mean": 2.0, "std": 0.0, "count": 1}
    assert ev.binary_metrics(np.ones((5, 5), int), np.ones((5, 5), int))["dice"] == 1.0  # 2D works too


def test_spacing_lookup_order(ev):
    from monai.data import MetaTensor

    report = ev.SegmentationReport("unused", spacing=[9.0, 9.0, 9.0])
    reader_meta = {"pixdim": [1.0, 0.5, 0.5, 2.0, 1, 1, 1, 1], "affine": torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0]))}
    image = MetaTensor(torch.zeros(1, 4, 4, 4), meta=reader_meta)
    assert report._spacing({"spacing": [1, 2, 3]}, image, (4, 4, 4), {"spacing": [4, 5, 6]}) == [1, 2, 3]
    assert report._spacing({}, image, (4, 4, 4), {"spacing": [4, 5, 6]}) == [4, 5, 6]
    assert report._spacing({}, image, (4, 4, 4), None) == [0.5, 0.5, 2.0]
    plain = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "x.nii"})  # no reader meta: identity affine
    assert report._spacing({}, plain, (4, 4, 4)) == [9.0, 9.0, 9.0]
    assert ev.SegmentationReport("unused")._spacing({}, plain, (4, 4, 4)) is None
    assert ev.SegmentationReport("unused", use_spacing=False)._spacing({"spacing": [1, 2, 3]}, image, (4, 4, 4)) is None


def _write_case(folder, name, image, label, spacing):
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(folder / f"{name}_label.nii.gz"))
    return {"image": str(folder / f"{name}.nii.gz"), "label": str(folder / f"{name}_label.nii.gz")}


class _OneHotOfImage(torch.nn.Module):
    """The 'network': the image stores the prediction as ``10 * class - 5``; returns its one-hot (as logits)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = ((x[:, 0] + 5) / 10).round().long().clamp(0, self.num_classes - 1)
        return torch.nn.functional.one_hot(classes, self.num_classes).permute(0, 4, 1, 2, 3).float() * 10


def _reject(constant: str):
    raise AssertionError(f"{constant} is not strict JSON")


def _run_evaluator(items, report, num_classes):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.transforms import AsDiscreted, Compose, EnsureTyped, LoadImaged

    transforms = Compose([LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True),
                          EnsureTyped("image", dtype=torch.float32)])
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=DataLoader(Dataset(items, transforms), batch_size=1),
                                    network=_OneHotOfImage(num_classes), postprocessing=AsDiscreted("pred", argmax=True),
                                    val_handlers=[report])
    evaluator.run()
    return evaluator


def test_volume_report_end_to_end(ev, tmp_path):
    """Two volumes named alike: a cube shifted 2 slices along z (spacing from the NIfTI header, 2 mm slices) and a cube
    shifted 1 voxel along x (spacing [1.5, 1, 1] from the datalist item, which wins over its header's 3 mm)."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    shape = (14, 12, 12)
    gt_a, pred_a = _cube(shape, (4, 4, 4), 4), _cube(shape, (4, 4, 6), 4)
    gt_b, pred_b = _cube(shape, (3, 3, 3), 5), _cube(shape, (4, 3, 3), 5)
    items = [_write_case(tmp_path / "site_a", "case", pred_a * 10.0 - 5, gt_a, [0.5, 0.5, 2.0]),
             {**_write_case(tmp_path / "site_b", "case", pred_b * 10.0 - 5, gt_b, [3.0, 3.0, 3.0]),
              "spacing": [1.5, 1.0, 1.0]}]
    out = tmp_path / "eval"
    report = ev.SegmentationReport(str(out), num_classes=2, class_names=["background", "left atrium"], empty_policy="paper",
                             max_pictures=1, name="la_test")
    evaluator = _run_evaluator(items, report, 2)

    with open(out / "metrics_per_volume.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "dice", "iou", "hd95", "hd95_pooled", "asd", "hd95_mm", "hd95_pooled_mm",
                             "asd_mm", "spacing_mm"]
    assert [r["id"] for r in rows] == ["case", "case~1"]  # repeated file names get a suffix
    a, b = ({k: (v if k in ("id", "spacing_mm") else float(v)) for k, v in r.items()} for r in rows)
    assert a["spacing_mm"] == "0.5 0.5 2" and b["spacing_mm"] == "1.5 1 1"
    assert a["dice"] == pytest.approx(0.5) and a["iou"] == pytest.approx(1 / 3)
    assert a["hd95"] == pytest.approx(2.0) and a["hd95_mm"] == pytest.approx(4.0) and a["hd95_pooled_mm"] == pytest.approx(4.0)
    assert b["dice"] == pytest.approx(2 * 100 / 250) and b["iou"] == pytest.approx(100 / 150)
    assert b["hd95"] == pytest.approx(1.0) and b["hd95_mm"] == pytest.approx(1.5)
    assert a["asd_mm"] == pytest.approx(ev.class_metrics(pred_a, gt_a, spacing=[0.5, 0.5, 2.0])["asd_mm"], rel=1e-6)

    summary = json.loads((out / "metrics_summary.json").read_text(), parse_constant=_reject)  # strict JSON
    assert summary["name"] == "la_test" and summary["num_volumes"] == 2 and summary["empty_policy"] == "paper"
    assert summary["counts"]["volumes_with_spacing"] == 2
    assert summary["counts"]["empty_prediction"] == {"left_atrium": 0}
    assert summary["definitions"]["empty_policy"].startswith("empty prediction: every metric 0")
    assert summary["metrics"]["dice"] == {"mean": pytest.approx(0.65), "std": pytest.approx(0.15), "count": 2}
    assert summary["metrics"]["hd95_mm"]["mean"] == pytest.approx((4.0 + 1.5) / 2)
    assert evaluator.state.metrics["test_dice"] == pytest.approx(0.65)
    assert evaluator.state.metrics["test_hd95"] == pytest.approx(1.5)
    assert evaluator.state.metrics["test_asd_mm"] == pytest.approx(summary["metrics"]["asd_mm"]["mean"])

    # one picture (max_pictures=1): 3 slices through the label's extent z = 4..7 -> slices 5, 6, 7, side by side
    # (2-pixel gaps), each slice transposed to rows = y
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["case.png"]
    rgb = np.asarray(Image.open(out / "pictures" / "case.png"))
    assert rgb.shape == (shape[1], 3 * shape[0] + 2 * 2, 3)
    colours = []
    for k, z in enumerate((5, 6, 7)):  # z = 5: ground truth only; z = 6, 7: both (red drawn over green)
        panel = rgb[:, k * (shape[0] + 2) : k * (shape[0] + 2) + shape[0]]
        red, green = (panel == (255, 0, 0)).all(-1), (panel == (0, 255, 0)).all(-1)
        assert np.array_equal(red, find_boundaries(pred_a[:, :, z].T, mode="inner"))
        assert np.array_equal(green, find_boundaries(gt_a[:, :, z].T, mode="inner") & ~red)
        colours.append((int(red.sum()), int(green.sum())))
    assert colours == [(0, 12), (12, 0), (12, 0)]
    grey = panel[~red & ~green][:, 0]
    assert grey.min() == 0 and grey.max() == 255  # intensities -5..5 rescaled per volume


def test_volume_report_multiclass_paper_policy_without_spacing(ev, tmp_path):
    pred, label = _cardiac_pair()
    items = [_write_case(tmp_path, "heart", pred * 10.0 - 5, label, [1.5, 1.5, 8.0])]
    names = ["background", "right_ventricle", "myocardium", "left_ventricle"]
    report = ev.SegmentationReport(str(tmp_path / "eval"), num_classes=4, class_names=names, empty_policy="paper",
                             use_spacing=False, max_pictures=0)
    evaluator = _run_evaluator(items, report, 4)
    header = (tmp_path / "eval" / "metrics_per_volume.csv").read_text().splitlines()[0].split(",")
    metric_keys = ["dice", "iou", "hd95", "hd95_pooled", "asd"]
    assert header == ["id", *metric_keys, *[f"{k}_{c}" for c in names[1:] for k in metric_keys], "spacing_mm"]
    row = report.rows[0]
    assert row["id"] == "heart" and row["spacing_mm"] == ""
    assert row["dice_left_ventricle"] == 0.0 and row["hd95_left_ventricle"] == 0.0  # empty prediction: 0 (paper)
    assert row["dice"] == pytest.approx((1.0 + 2 * 72 / 216 + 0.0) / 3) and row["hd95"] == pytest.approx(1.0)
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text(), parse_constant=_reject)
    assert summary["metrics"]["hd95_left_ventricle"] == {"mean": 0.0, "std": 0.0, "count": 1}
    assert summary["counts"]["empty_prediction"] == {"right_ventricle": 0, "myocardium": 0, "left_ventricle": 1}
    assert summary["counts"]["volumes_with_spacing"] == 0 and "hd95_mm" not in summary["metrics"]
    assert evaluator.state.metrics["test_dice_myocardium"] == pytest.approx(2 * 72 / 216)
    assert not (tmp_path / "eval" / "pictures").exists()


def test_evaluation_speed_on_an_la_sized_volume(ev):
    import time

    shape = (175, 132, 88)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    gt = ((z - 85) / 40.0) ** 2 + ((y - 66) / 35.0) ** 2 + ((x - 44) / 25.0) ** 2 <= 1
    pred = ((z - 88) / 41.0) ** 2 + ((y - 64) / 33.0) ** 2 + ((x - 45) / 26.0) ** 2 <= 1
    start = time.perf_counter()
    m = ev.binary_metrics(pred, gt, spacing=[0.625] * 3, empty_policy="paper")
    assert time.perf_counter() - start < 3.0
    assert 0.85 < m["dice"] < 1.0 and m["hd95_mm"] == pytest.approx(0.625 * m["hd95"], rel=1e-5)
