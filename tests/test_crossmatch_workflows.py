# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""End-to-end runs of the crossmatch_3d bundle through ``python -m monai.bundle run``, from a copy of the bundle
alone in an empty folder (nothing of the repository on the path)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLES, REPO, run_bundle

pytestmark = pytest.mark.slow

LA = ["configs/train.yaml", "configs/demo.yaml"]
ACDC = ["configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"]
TINY = ("--max_iterations", "4", "--val_interval", "2", "--num_workers", "0", "--log_interval", "1",
        "--max_pictures", "1")


def _copy_bundle(dst_root: Path) -> Path:
    dst = dst_root / "crossmatch_3d"
    shutil.copytree(BUNDLES / "crossmatch_3d", dst,
                    ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _summary(run: Path) -> dict:
    return json.loads((run / "evaluation" / "metrics_summary.json").read_text())


def _mean(summary: dict, metric: str) -> float:
    return summary["metrics"][metric]["mean"]


@pytest.fixture(scope="module")
def la_demo(tmp_path_factory) -> Path:
    """The LA-like demo (train.yaml + demo.yaml) run once in a bundle copy; later tests reuse its results."""
    b = _copy_bundle(tmp_path_factory.mktemp("clean_room_la"))
    _ok(run_bundle(b, LA, timeout=1200))
    return b


@pytest.fixture(scope="module")
def acdc_demo(tmp_path_factory) -> Path:
    """The cardiac-like demo (train.yaml + acdc.yaml + demo.yaml) run once in a bundle copy."""
    b = _copy_bundle(tmp_path_factory.mktemp("clean_room_acdc"))
    _ok(run_bundle(b, ACDC, timeout=1200))
    return b


def test_la_demo_trains_and_reaches_the_target(la_demo):
    run = la_demo / "runs" / "demo_la"
    summary = _summary(run)
    assert _mean(summary, "dice") >= 0.75, summary
    for f in ("FINISHED", "models/model.pt", "models/model_best.pt", "models/checkpoint.pt"):
        assert (run / f).exists(), f
    assert (la_demo / "models" / "model.pt").exists()
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    with open(run / "evaluation" / "metrics_per_volume.csv") as f:
        rows = list(csv.DictReader(f))
    n_test = len(json.loads((la_demo / "data" / "phantom_la" / "datalist.json").read_text())["test"])
    assert len(rows) == n_test
    assert all(float(r["dice"]) > 0.5 for r in rows), rows
    assert "hd95_mm" in rows[0]  # the phantoms' spacing is known (0.625 mm)
    assert list((run / "evaluation").rglob("*.png"))


def test_acdc_demo_trains_and_reaches_the_target(acdc_demo):
    run = acdc_demo / "runs" / "demo_acdc"
    summary = _summary(run)
    assert _mean(summary, "dice") >= 0.70, summary
    text = json.dumps(summary)
    for name in ("right_ventricle", "myocardium", "left_ventricle"):
        assert name in text
    assert (run / "FINISHED").exists() and (run / "models" / "model_best.pt").exists()


def test_la_evaluate_and_inference_from_the_bundle_copy(la_demo):
    out = _ok(run_bundle(la_demo, [*LA, "configs/evaluate.yaml"]))
    assert _summary(la_demo / "runs" / "evaluate_la")["metrics"]["dice"]["count"] >= 1 and "evaluation" in out
    images = sorted((la_demo / "data" / "phantom_la" / "images").glob("*.nii.gz"))[:2]
    _ok(run_bundle(la_demo, ["configs/inference.yaml"], "--input", json.dumps([str(p) for p in images]),
                   "--save_probabilities", "True"))
    pred_dir = la_demo / "predictions" / "inference"
    for img in images:
        stem = img.name[: -len(".nii.gz")]
        seg = nib.load(str(pred_dir / f"{stem}_seg.nii.gz"))
        assert seg.shape == nib.load(str(img)).shape
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
        assert np.allclose(seg.affine, nib.load(str(img)).affine)
        assert (pred_dir / f"{stem}_prob.nii.gz").exists()


def test_acdc_inference_with_the_overlay(acdc_demo):
    image = sorted((acdc_demo / "data" / "phantom_acdc" / "images").glob("*.nii.gz"))[0]
    _ok(run_bundle(acdc_demo, ["configs/inference.yaml", "configs/acdc.yaml"], "--input", str(image)))
    # acdc.yaml names the run "acdc", so the predictions land in predictions/acdc
    seg = nib.load(str(next((acdc_demo / "predictions" / "acdc").glob("*_seg.nii.gz"))))
    assert seg.shape == nib.load(str(image)).shape
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}


def test_supervised_baseline_runs(tmp_path):
    b = _copy_bundle(tmp_path)
    out = _ok(run_bundle(b, [*LA, "configs/baseline.yaml"], *TINY))
    run = b / "runs" / "supervised_la"
    assert (run / "FINISHED").exists() and (run / "models" / "model.pt").exists()
    assert "loss_x" not in out  # the supervised trainer has no CrossMatch terms


def test_bad_label_values_stop_before_training(tmp_path):
    b = _copy_bundle(tmp_path)
    data = tmp_path / "bad"
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "from scripts.common.phantom_3d import write_phantom_dataset; "
                           "write_phantom_dataset(sys.argv[2], 'la')",
                           str(b), str(data)], capture_output=True, text=True, timeout=300)
    _ok(proc)
    label_file = data / json.loads((data / "datalist.json").read_text())["labeled"][0]["label"]
    img = nib.load(str(label_file))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, img.affine), str(label_file))
    proc = run_bundle(b, LA, *TINY, "--dataset_dir", str(data), "--run_name", "bad")
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert label_file.name in err and "7" in err, err[-3000:]
    assert not list((b / "runs").rglob("checkpoint.pt")), "training started despite the bad label"


@pytest.mark.realdata
@pytest.mark.parametrize(("source", "configs", "extra"), [
    ("la", LA, ("--num_labeled", "4", "--test_from", "split")),
    ("acdc", ACDC, ("--labeled_patients", "list", "--test_from", "split")),
])
def test_real_data_workflows(tmp_path, shared_data, source, configs, extra):
    prepared = tmp_path / f"{source}_prepared"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), source, "--source",
                           str(shared_data / source.upper()), "--output", str(prepared), *extra],
                          capture_output=True, text=True, timeout=600)
    _ok(proc)
    b = _copy_bundle(tmp_path)
    _ok(run_bundle(b, configs, *TINY, "--dataset_dir", str(prepared), "--run_name", "real"))
    summary = _summary(b / "runs" / "real")
    assert summary["metrics"]["dice"]["count"] >= 1
    test_images = [str(prepared / it["image"]) for it in json.loads((prepared / "datalist.json").read_text())["test"][:1]]
    inference = ["configs/inference.yaml"] + (["configs/acdc.yaml"] if source == "acdc" else [])
    _ok(run_bundle(b, inference, "--input", json.dumps(test_images), "--ckpt_path", str(b / "runs" / "real" / "models" / "model.pt")))
    assert len(list((b / "predictions" / ("acdc" if source == "acdc" else "inference")).glob("*_seg.nii.gz"))) == 1
