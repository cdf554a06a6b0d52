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
from scripts.evaluation import SegmentationReport, class_metrics, pooled_hd95, segmentation_metrics, summarize  # noqa: E402
from scripts.transforms import PixelSpacingToMetad  # noqa: E402


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


def test_pooled_hd95_matches_brute_force():
    rng = np.random.default_rng(0)
    a = np.zeros((24, 24), bool)
    b = np.zeros((24, 24), bool)
    a[4:15, 3:12] = True
    b[6:20, 5:18] = True
    a[rng.integers(0, 24, 5), rng.integers(0, 24, 5)] = True

    def surface(m):
        from scipy import ndimage

        return np.argwhere(m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool)))

    sa, sb = surface(a), surface(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(1), d.min(0)])
    assert pooled_hd95(a, b) == pytest.approx(np.percentile(pooled, 95))


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

    report = SegmentationReport(str(tmp_path / "eval"), empty_policy="zero", max_overlays=2)
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
    assert sorted(p.name for p in (tmp_path / "eval" / "overlays").iterdir()) == ["case0.png", "case1.png"]
    assert evaluator.state.metrics["test_dice"] == pytest.approx(2 / 3)
