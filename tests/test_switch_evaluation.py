# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Evaluation metrics against hand computations, and the report handler on a real evaluator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import import_bundle

import_bundle("switch_us")
from scripts.common.images2d import PixelSpacingToMetad  # noqa: E402
from scripts.common.metrics import (  # noqa: E402
    binary_metrics,
    class_metrics,
    multiclass_metrics,
    pooled_hd95,
    segmentation_metrics,
    summarize,
)
from scripts.common.reports import SegmentationReport  # noqa: E402


def _square(size: int, y: int, x: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y : y + side, x : x + side] = True
    return m


def test_dice_iou_exact():
    a, b = _square(32, 0, 0, 10), _square(32, 0, 5, 10)  # overlap 10 x 5 = 50, each 100
    m = class_metrics(a, b)
    assert m["dice"] == pytest.approx(2 * 50 / 200)
    assert m["iou"] == pytest.approx(50 / 150)


def test_distances_of_a_shifted_square_in_pixels_and_mm():
    a, b = _square(40, 10, 10, 10), _square(40, 10, 13, 10)  # shifted by 3 columns
    m = class_metrics(a, b, spacing=[0.5, 2.0])
    assert m["hd95"] == pytest.approx(3.0)  # the farthest boundary pixels are 3 columns apart
    assert m["hd95_mm"] == pytest.approx(6.0)  # columns are the second axis: 2 mm each
    # ASD (pred -> gt) averages boundary distances in [0, 3] px; rows are 0.5 mm, columns 2 mm apart
    assert 0 < m["asd"] < 3
    assert 0.5 * m["asd"] <= m["asd_mm"] <= 2 * m["asd"]
    same = class_metrics(a, a, spacing=[0.5, 2.0])
    assert same["dice"] == 1.0 and same["hd95"] == 0.0 and same["asd_mm"] == 0.0
    assert m["hd95_pooled"] == pytest.approx(pooled_hd95(a, b))


def _brute_surface(m: np.ndarray) -> np.ndarray:
    """Coordinates of mask pixels with a 4-neighbour outside the mask or the image (medpy's / MONAI's surface)."""
    padded = np.pad(m, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(m & ~inner).astype(float)


@pytest.mark.parametrize("spacing", [None, (0.5, 2.0)])
def test_distances_match_brute_force(spacing):
    """MONAI-style HD95 (percentile per direction, then max), pooled HD95 and directed ASD, by brute force."""
    rows, cols = np.mgrid[0:40, 0:40]
    disk = (rows - 18) ** 2 + (cols - 20) ** 2 <= 11**2  # a disk: 4- and 8-connected surfaces differ
    blob = ((rows - 22) / 9.0) ** 2 + ((cols - 17) / 13.0) ** 2 <= 1
    blob[2:5, 30:34] = True  # a distant false-positive island
    sa, sb = _brute_surface(disk), _brute_surface(blob)
    scale = np.ones(2) if spacing is None else np.asarray(spacing)
    d = np.sqrt((((sa[:, None, :] - sb[None, :, :]) * scale) ** 2).sum(-1))
    a_to_b, b_to_a = d.min(1), d.min(0)
    suffix = "" if spacing is None else "_mm"
    m = class_metrics(disk, blob, spacing=spacing)
    assert m["hd95" + suffix] == pytest.approx(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)), rel=1e-5)
    assert m["hd95_pooled" + suffix] == pytest.approx(np.percentile(np.concatenate([a_to_b, b_to_a]), 95), rel=1e-6)
    assert m["asd" + suffix] == pytest.approx(a_to_b.mean(), rel=1e-5)  # directed prediction -> ground truth
    assert m["hd95_pooled" + suffix] <= m["hd95" + suffix]
    assert pooled_hd95(disk, blob, spacing, percentile=100) == pytest.approx(max(a_to_b.max(), b_to_a.max()))


def test_binary_and_multiclass_api():
    label = np.zeros((20, 20), np.int64)
    label[2:8, 2:8] = 1
    label[10:16, 10:16] = 2
    pred = np.zeros_like(label)
    pred[2:8, 5:11] = 1  # class 1 shifted right by 3 columns: overlap 6 x 3
    pred[10:16, 10:16] = 2
    b = binary_metrics(torch.as_tensor(pred), label, spacing=[2.0, 1.0])
    assert b["dice"] == pytest.approx(2 * 18 / 72) and b["iou"] == pytest.approx(18 / 54)
    assert b["hd95_mm"] == pytest.approx(b["hd95"] * 1.0)  # the shift is along the second axis (1 mm)
    per_class = multiclass_metrics(pred, label, num_classes=3, spacing=[2.0, 1.0])
    assert set(per_class) == {1, 2}
    assert per_class[1]["dice"] == pytest.approx(b["dice"]) and per_class[2]["dice"] == 1.0
    assert per_class[2]["hd95_mm"] == 0.0
    vertical = np.zeros_like(label)
    vertical[5:11, 2:8] = 1  # the same square shifted down by 3 rows (2 mm each)
    v = binary_metrics(vertical, label, spacing=[2.0, 1.0])
    assert v["hd95"] == pytest.approx(b["hd95"]) and v["hd95_mm"] == pytest.approx(2.0 * v["hd95"])


@pytest.mark.parametrize("policy, expected", [("skip", None), ("zero", 0.0), ("one", 1.0)])
def test_empty_policies(policy, expected):
    empty = np.zeros((8, 8), bool)
    m = class_metrics(empty, empty, empty_policy=policy)
    if expected is None:
        assert math.isnan(m["dice"]) and math.isnan(m["iou"])
    else:
        assert m["dice"] == expected and m["iou"] == expected
    assert math.isnan(m["hd95"]) and math.isnan(m["asd"])
    fp = class_metrics(_square(8, 0, 0, 2), empty, empty_policy=policy)  # a false positive image scores 0
    assert fp["dice"] == 0.0 and math.isnan(fp["hd95"])
    with pytest.raises(ValueError, match="empty_policy"):
        class_metrics(empty, empty, empty_policy="maybe")


def test_multiclass_and_summary():
    label = np.zeros((16, 16), int)
    label[2:8, 2:8] = 1
    label[10:14, 10:14] = 2
    pred = label.copy()
    pred[10:14, 10:12] = 0  # class 2 half missed
    m = segmentation_metrics(pred, label, num_classes=3, class_names=["bg", "a", "b"])
    assert m["dice_a"] == pytest.approx(1.0) and m["dice_b"] == pytest.approx(2 * 8 / 24)
    assert m["dice"] == pytest.approx((1.0 + 2 * 8 / 24) / 2)
    s = summarize([{"id": "x", "dice": 0.5, "hd95": math.nan}, {"id": "y", "dice": 1.0, "hd95": 2.0}])
    assert s["dice"] == {"mean": 0.75, "std": 0.25, "count": 2} and s["hd95"]["count"] == 1


def test_report_handler_with_an_evaluator(tmp_path):
    from monai.data import DataLoader, MetaTensor
    from monai.engines import SupervisedEvaluator

    labels = [_square(32, 4, 4, 12), _square(32, 10, 10, 8), np.zeros((32, 32), bool)]
    data = []
    for i, lab in enumerate(labels):
        img = MetaTensor(torch.as_tensor(lab, dtype=torch.float32)[None], meta={"filename_or_obj": f"/x/case{i}.png", "spatial_shape": [64, 64]})
        data.append(PixelSpacingToMetad("image")({"image": img, "label": torch.as_tensor(lab, dtype=torch.float32)[None], "spacing": [0.5, 0.5]}))

    class Identity(torch.nn.Module):
        def forward(self, x):  # logits that reproduce the label exactly
            return torch.cat([1 - x, x], dim=1) * 10

    report = SegmentationReport(str(tmp_path / "eval"), empty_policy="zero", max_pictures=2, item="image", resized=True)
    from monai.transforms import Activationsd, AsDiscreted, Compose

    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=DataLoader(data, batch_size=1), network=Identity(),
                                    postprocessing=Compose([Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True)]),
                                    val_handlers=[report])
    evaluator.run()
    rows = (tmp_path / "eval" / "metrics_per_image.csv").read_text().strip().splitlines()
    assert rows[0].startswith("id,dice,iou,hd95") and len(rows) == 4 and rows[1].startswith("case0,1.0,1.0,0.0")
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert summary["num_images"] == 3
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(2 / 3)  # case2 is empty/empty -> 0 under "zero"
    assert summary["metrics"]["hd95_mm"]["count"] == 2  # spacing 0.5 scaled by 64/32 -> 1 mm per pixel
    assert sorted(p.name for p in (tmp_path / "eval" / "pictures").iterdir()) == ["case0.png", "case1.png"]
    assert evaluator.state.metrics["test_dice"] == pytest.approx(2 / 3)


def test_report_on_pngs_loaded_resized_and_batched(tmp_path):
    """The bundle's real path: PNGs read by MONAI (arrays are (W, H)), resized to the network grid, batch 2.

    Native images are 24 rows x 32 columns with spacing [sx, sy] = [0.5, 0.25] mm; the evaluated grid is half
    the size, so its pixels are 1.0 mm along x (columns) and 0.5 mm along y (rows).
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRanged
    from PIL import Image
    from skimage.segmentation import find_boundaries

    def mask(r0, r1, c0, c1):
        m = np.zeros((24, 32), np.uint8)
        m[r0:r1, c0:c1] = 1
        return m

    cases = {  # (label, prediction) in native (row, column) pixels, on even coordinates
        "sideways": (mask(4, 12, 8, 20), mask(4, 12, 12, 24)),  # shifted 4 columns = 2 evaluated px = 2 mm
        "downward": (mask(4, 12, 8, 20), mask(8, 16, 8, 20)),  # shifted 4 rows = 2 evaluated px = 1 mm
        "nothing": (mask(0, 0, 0, 0), mask(0, 0, 0, 0)),
    }
    items = []
    for name, (lab, pred) in cases.items():
        Image.fromarray(pred * 255).save(tmp_path / f"{name}.png")
        Image.fromarray(lab).save(tmp_path / f"{name}_label.png")
        items.append({"image": str(tmp_path / f"{name}.png"), "label": str(tmp_path / f"{name}_label.png"),
                      "spacing": [0.5, 0.25]})
    transforms = Compose([
        LoadImaged(["image", "label"], reader="PILReader"),
        EnsureChannelFirstd(["image", "label"]),
        ScaleIntensityRanged("image", 0, 255, 0, 1),
        PixelSpacingToMetad("image"),
        Resized(["image", "label"], spatial_size=(16, 12), mode="nearest"),
    ])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return torch.cat([1 - x, x], dim=1)

    report = SegmentationReport(str(tmp_path / "eval"), empty_policy="skip", max_pictures=2, item="image", resized=True,
                                name="pngs")
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=DataLoader(Dataset(items, transforms), batch_size=2),
                                    network=Identity(), postprocessing=AsDiscreted("pred", argmax=True),
                                    val_handlers=[report])
    evaluator.run()

    rows = {r["id"]: r for r in report.rows}
    assert list(rows) == ["sideways", "downward", "nothing"]
    side, down = rows["sideways"], rows["downward"]
    assert side["spacing_mm"] == down["spacing_mm"] == "1 0.5"  # x then y, as MONAI's arrays
    # evaluated grid: label 4 rows x 6 columns; sideways keeps 4 of 6 columns, downward 2 of 4 rows
    assert side["dice"] == pytest.approx(2 * 16 / 48) and side["iou"] == pytest.approx(16 / 32)
    assert down["dice"] == pytest.approx(2 * 12 / 48) and down["iou"] == pytest.approx(12 / 36)
    # a 2-pixel shift: 2 mm along x (1.0 mm pixels), 1 mm along y (0.5 mm pixels)
    assert side["hd95"] == pytest.approx(2.0) and side["hd95_mm"] == pytest.approx(2.0)
    assert down["hd95"] == pytest.approx(2.0) and down["hd95_mm"] == pytest.approx(1.0)
    assert side["hd95_pooled_mm"] == pytest.approx(2.0) and down["hd95_pooled_mm"] == pytest.approx(1.0)
    assert math.isnan(rows["nothing"]["dice"]) and math.isnan(rows["nothing"]["hd95"])

    text = (tmp_path / "eval" / "metrics_summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the summary: not strict JSON"))
    assert summary["name"] == "pngs" and summary["num_images"] == 3 and summary["empty_policy"] == "skip"
    assert summary["metrics"]["dice"] == {"mean": pytest.approx(7 / 12), "std": pytest.approx(1 / 12), "count": 2}
    assert evaluator.state.metrics["test_hd95_mm"] == pytest.approx(summary["metrics"]["hd95_mm"]["mean"])
    csv_rows = (tmp_path / "eval" / "metrics_per_image.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 4 and csv_rows[0].startswith("id,dice,iou,hd95")

    # the overlay looks like the PNG (rows x columns), at the evaluated size
    overlays = sorted(p.name for p in (tmp_path / "eval" / "pictures").iterdir())
    assert overlays == ["downward.png", "sideways.png"]
    rgb = np.asarray(Image.open(tmp_path / "eval" / "pictures" / "sideways.png"))
    lab, pred = (m[::2, ::2] for m in cases["sideways"])  # nearest resizing keeps every other pixel
    assert rgb.shape == (12, 16, 3)
    red = (rgb == (255, 0, 0)).all(-1)
    green = (rgb == (0, 255, 0)).all(-1)
    assert np.array_equal(red, find_boundaries(pred, mode="inner"))
    assert np.array_equal(green, find_boundaries(lab, mode="inner") & ~red)
