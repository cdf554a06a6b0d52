# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""End-to-end runs of the mgcc_us bundle through ``python -m monai.bundle run``, from a copy of the bundle alone in an
empty folder: the model card's demo (generation stage, then MGCC trained on the generated unlabelled images), then
evaluation and inference with the published model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLES, run_bundle
from PIL import Image

pytestmark = pytest.mark.slow


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _dice(summary_file: Path) -> float:
    return json.loads(summary_file.read_text())["metrics"]["dice"]["mean"]


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory) -> Path:
    """The model card's demo, run once: generate.yaml + demo.yaml, then train.yaml + demo.yaml on the generated images."""
    b = tmp_path_factory.mktemp("clean_room") / "mgcc_us"
    shutil.copytree(BUNDLES / "mgcc_us", b,
                    ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    _ok(run_bundle(b, ["configs/generate.yaml", "configs/demo.yaml"], timeout=900))
    _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], "--unlabeled_source", "synthetic", timeout=900))
    return b


def test_generation_writes_images_a_datalist_copy_and_their_measure(demo_bundle):
    gen = demo_bundle / "runs" / "generate_demo"
    datalist = json.loads((gen / "datalist.json").read_text())
    assert len(datalist["synthetic"]) == 48
    images = [gen / item["image"] for item in datalist["synthetic"]]
    assert all(p.is_file() for p in images)
    assert np.asarray(Image.open(images[0])).shape == (64, 64)
    original = json.loads((demo_bundle / "data" / "phantom_us" / "datalist.json").read_text())
    assert "synthetic" not in original  # the dataset's own datalist is never modified
    assert [len(datalist[k]) for k in ("labeled", "unlabeled", "test")] == [len(original[k]) for k in ("labeled", "unlabeled", "test")]
    grid = np.asarray(Image.open(gen / "generation_grid.png"))
    assert grid.ndim >= 2 and grid.shape[0] > 2 * 64  # a row of real images above a row of generated ones
    distance = json.loads((gen / "generation_distance.json").read_text())
    assert distance["frechet_distance"] >= 0.0 and distance["num_generated"] == 48
    assert (gen / "FINISHED").is_file() and (gen / "models" / "diffusion.pt").is_file()


def test_training_on_generated_images_reaches_the_target(demo_bundle):
    run = demo_bundle / "runs" / "demo"
    assert _dice(run / "evaluation" / "metrics_summary.json") >= 0.80
    assert (run / "FINISHED").exists() and (run / "models" / "model_final.pt").exists()
    record = json.loads((demo_bundle / "models" / "model.json").read_text())
    assert record["settings"]["image_size"] == 64 and record["settings"]["width"] == 8


def test_evaluate_and_inference_with_the_published_model(demo_bundle):
    # the model card's evaluation command: the model's settings (64 px, width 8) travel with the weights
    _ok(run_bundle(demo_bundle, ["configs/train.yaml", "configs/evaluate.yaml"], "--run_name", "card_evaluate"))
    card = _dice(demo_bundle / "runs" / "card_evaluate" / "evaluation" / "metrics_summary.json")
    assert card == pytest.approx(_dice(demo_bundle / "runs" / "demo" / "evaluation" / "metrics_summary.json"), abs=1e-6)
    images = sorted((demo_bundle / "data" / "phantom_us" / "images").glob("test_*.png"))[:2]
    _ok(run_bundle(demo_bundle, ["configs/inference.yaml"], "--input", json.dumps([str(p) for p in images]),
                   "--save_probabilities", "True"))
    for img in images:
        seg = np.asarray(Image.open(demo_bundle / "predictions" / "inference" / f"{img.stem}_seg.png"))
        assert seg.shape == np.asarray(Image.open(img)).shape[:2] and set(np.unique(seg)) <= {0, 255}
        assert (demo_bundle / "predictions" / "inference" / f"{img.stem}_prob.png").is_file()
