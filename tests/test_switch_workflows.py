# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""End-to-end runs of the switch_us bundle through ``python -m monai.bundle run``, from a copy of the bundle
alone in an empty folder (nothing of the repository on the path)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLES, REPO, kill_mid_run, run_bundle
from PIL import Image

pytestmark = pytest.mark.slow

TINY = ("--image_size", "64", "--batch_size", "2", "--pretrain_iterations", "6", "--selftrain_iterations", "6",
        "--val_interval", "6", "--num_workers", "0", "--log_interval", "3", "--max_pictures", "2")


def _copy_bundle(dst_root: Path) -> Path:
    dst = dst_root / "switch_us"
    shutil.copytree(BUNDLES / "switch_us", dst,
                    ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory) -> Path:
    """The demo (train.yaml + demo.yaml) run once in a bundle copy; later tests reuse its results."""
    b = _copy_bundle(tmp_path_factory.mktemp("clean_room"))
    _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], timeout=900))
    return b


def test_demo_trains_and_reaches_the_target(demo_bundle):
    run = demo_bundle / "runs" / "demo"
    summary = json.loads((run / "evaluation" / "metrics_summary.json").read_text())
    dice = summary["metrics"]["dice"]["mean"] if "metrics" in summary else summary["dice"]["mean"]
    assert dice >= 0.80, summary
    assert (run / "FINISHED").exists() and (run / "models" / "model.pt").exists()
    assert (run / "models" / "model_pretrain.pt").exists()
    assert (demo_bundle / "models" / "model.pt").exists()
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    rows = (run / "evaluation" / "metrics_per_image.csv").read_text().strip().splitlines()
    n_test = len(json.loads((demo_bundle / "data" / "phantom_us" / "datalist.json").read_text())["test"])
    assert len(rows) == n_test + 1
    assert list((run / "evaluation" / "pictures").glob("*.png"))


def test_evaluate_and_inference_from_the_bundle_copy(demo_bundle):
    out = _ok(run_bundle(demo_bundle, ["configs/train.yaml", "configs/demo.yaml", "configs/evaluate.yaml"]))
    summary = json.loads((demo_bundle / "runs" / "evaluate" / "evaluation" / "metrics_summary.json").read_text())
    assert "dice" in json.dumps(summary) and "evaluation" in out

    # the model card's evaluation command, without the demo overlay: the model's settings (128 px) travel with it
    demo = json.loads((demo_bundle / "runs" / "demo" / "evaluation" / "metrics_summary.json").read_text())
    assert json.loads((demo_bundle / "models" / "model.json").read_text())["settings"]["image_size"] == 128
    _ok(run_bundle(demo_bundle, ["configs/train.yaml", "configs/evaluate.yaml"], "--run_name", "card_evaluate"))
    card = json.loads((demo_bundle / "runs" / "card_evaluate" / "evaluation" / "metrics_summary.json").read_text())
    assert card["metrics"]["dice"]["mean"] == pytest.approx(demo["metrics"]["dice"]["mean"], abs=1e-6)
    refused = run_bundle(demo_bundle, ["configs/train.yaml", "configs/evaluate.yaml"], "--image_size", "256",
                         "--run_name", "refused")
    assert refused.returncode != 0 and "the model was trained with 128, this run sets 256" in refused.stderr
    assert not (demo_bundle / "runs" / "refused").exists()
    images = sorted((demo_bundle / "data" / "phantom_us" / "images").glob("*.png"))[:3]
    _ok(run_bundle(demo_bundle, ["configs/inference.yaml"], "--input", json.dumps([str(p) for p in images]),
                   "--save_probabilities", "True"))
    pred_dir = demo_bundle / "predictions" / "inference"
    for img in images:
        seg = pred_dir / f"{img.stem}_seg.png"
        prob = pred_dir / f"{img.stem}_prob.png"
        assert seg.exists() and prob.exists(), sorted(p.name for p in pred_dir.iterdir())
        arr = np.asarray(Image.open(seg))
        assert arr.shape == np.asarray(Image.open(img)).shape[:2]
        assert set(np.unique(arr)) <= {0, 255}

    # weights without the training-only projector (a supervised or BCP model) serve through the same config
    import torch

    record = torch.load(demo_bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = record["model"]
    baseline = demo_bundle / "baseline_model.pt"  # a baseline trained by this bundle records its settings too
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("projector.")},
                "settings": record["settings"]}, baseline)
    out = _ok(run_bundle(demo_bundle, ["configs/inference.yaml"], "--input", json.dumps([str(p) for p in images]),
                         "--ckpt_path", str(baseline), "--run_name", "baseline"))
    assert "left as is: projector" in out
    for img in images:
        again = np.asarray(Image.open(demo_bundle / "predictions" / "baseline" / f"{img.stem}_seg.png"))
        assert np.array_equal(again, np.asarray(Image.open(pred_dir / f"{img.stem}_seg.png")))
    missing = run_bundle(demo_bundle, ["configs/inference.yaml"], "--input", json.dumps([str(images[0])]),
                         "--ckpt_path", str(demo_bundle / "no_such_model.pt"))
    assert missing.returncode != 0 and "no weights at ckpt_path" in missing.stdout + missing.stderr


def test_mlflow_tracking(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    b = _copy_bundle(tmp_path)
    _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], *TINY, "--run_name", "tracked", "--tracking", "mlflow"))
    db = b / "runs" / "tracked" / "mlruns.db"
    assert db.exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs
    metrics = set().union(*(r.data.metrics for r in runs))
    assert "train_loss" in metrics and "val_mean_dice" in metrics
    assert any(r.data.params for r in runs)


@pytest.mark.realdata
@pytest.mark.parametrize("source", ["busi", "ddti", "hc18"])
def test_real_data_workflows(tmp_path, shared_data, source):
    prepared = tmp_path / f"{source}_prepared"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), source, "--source",
                           str(shared_data / source.upper()), "--output", str(prepared), "--labeled_ratio", "0.3"],
                          capture_output=True, text=True, timeout=300)
    _ok(proc)
    b = _copy_bundle(tmp_path)
    _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], *TINY, "--dataset_dir", str(prepared)))
    summary = json.loads((b / "runs" / "demo" / "evaluation" / "metrics_summary.json").read_text())
    assert summary
    test_images = [str(prepared / it["image"]) for it in json.loads((prepared / "datalist.json").read_text())["test"][:2]]
    _ok(run_bundle(b, ["configs/inference.yaml"], "--input", json.dumps(test_images),  # a trial run publishes nothing
                   "--ckpt_path", str(b / "runs" / "demo" / "models" / "model.pt")))
    assert not (b / "models" / "model.pt").exists()
    assert len(list((b / "predictions" / "inference").glob("*_seg.png"))) == 2


def test_sigkill_then_same_command_resumes_to_the_same_weights(tmp_path):
    import torch

    b = _copy_bundle(tmp_path)
    # the phantom data are generated once, before the timed runs
    args = ["--image_size", "64", "--batch_size", "2", "--pretrain_iterations", "8", "--selftrain_iterations", "56",
            "--val_interval", "4", "--num_workers", "0", "--log_interval", "4", "--amp", "False",
            "--run", "['$@train#trainer.run()']"]
    _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], *args, "--run_name", "straight"))

    ckpt = b / "runs" / "killed" / "models" / "checkpoint.pt"
    # in the middle of self-training
    kill_mid_run(b, ["configs/train.yaml", "configs/demo.yaml"], [*args, "--run_name", "killed"], ckpt, 16, 56)
    assert not (b / "runs" / "killed" / "FINISHED").exists()
    out = _ok(run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], *args, "--run_name", "killed"))
    assert "resumed from" in out
    a = torch.load(b / "runs" / "straight" / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    k = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert a["engine"]["iteration"] == k["engine"]["iteration"] == 64
    for name, t in a["network"].items():
        assert torch.allclose(t.float(), k["network"][name].float(), atol=1e-5), name
    for name, t in a["teacher"].items():
        assert torch.allclose(t.float(), k["teacher"][name].float(), atol=1e-5), name
