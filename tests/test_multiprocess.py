# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Every bundle under ``torchrun --nproc_per_node 2`` on CPU (gloo), and the crossmatch_3d fault paths
(SIGKILL then resume, MLflow tracking, a diverging loss), each from a copy of the bundle alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUNDLES, kill_mid_run, run_bundle

pytestmark = pytest.mark.slow

SWITCH_TINY = ("--image_size", "64", "--batch_size", "2", "--pretrain_iterations", "4", "--selftrain_iterations", "4",
               "--val_interval", "4", "--num_workers", "0", "--log_interval", "2", "--max_pictures", "1")
MGCC_TINY = ("--image_size", "64", "--batch_size", "2", "--max_iterations", "4", "--val_interval", "4", "--width", "8",
             "--mixer_depth", "1", "--num_workers", "0", "--log_interval", "2", "--max_pictures", "1")
LC_TINY = ("--supervised_iterations", "4", "--round_iterations", "2", "--rounds", "1", "--val_interval", "2",
           "--batch_size", "2", "--num_workers", "0", "--log_interval", "1", "--max_pictures", "1")
CM_TINY = ("--max_iterations", "6", "--val_interval", "3", "--num_workers", "0", "--log_interval", "1",
           "--max_pictures", "1", "--batch_size", "1")


def _copy(name: str, root: Path) -> Path:
    dst = root / name
    shutil.copytree(BUNDLES / name, dst,
                    ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _torchrun(bundle: Path, configs: list[str], *overrides: str) -> subprocess.CompletedProcess:
    config_arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", config_arg, *overrides]
    env = {**os.environ, "PYTHONPATH": str(bundle), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    ("name", "configs", "tiny", "run_name"),
    [
        ("switch_us", ["configs/train.yaml", "configs/demo.yaml", "configs/multi_gpu_train.yaml"], SWITCH_TINY, "ddp"),
        ("crossmatch_3d", ["configs/train.yaml", "configs/demo.yaml", "configs/multi_gpu_train.yaml"], CM_TINY, "ddp"),
        ("mgcc_us", ["configs/train.yaml", "configs/demo.yaml", "configs/multi_gpu_train.yaml"], MGCC_TINY, "ddp"),
        ("localcontrast_2d", ["configs/train.yaml", "configs/demo.yaml", "configs/multi_gpu_train.yaml"], LC_TINY, "ddp"),
    ],
)
def test_two_processes_train_and_rank0_alone_writes(tmp_path, name, configs, tiny, run_name):
    b = _copy(name, tmp_path)
    out = _ok(_torchrun(b, configs, *tiny, "--run_name", run_name, "--publish_model", "True"))  # a trial run: asked for
    run = b / "runs" / run_name
    assert (run / "FINISHED").exists(), out[-3000:]
    assert sorted(p.name for p in (b / "runs").iterdir()) == [run_name]  # rank 1 made no folder of its own
    events = list(run.glob("events.out.tfevents.*"))
    assert events and len({p.name.split(".")[4] for p in events}) == 1  # one writing process (the pid field)
    state = torch.load(b / "models" / "model.pt", map_location="cpu", weights_only=False)
    weights = state.get("network", state) if isinstance(state, dict) else state
    assert all(torch.isfinite(t.float()).all() for t in weights.values() if torch.is_tensor(t))
    assert (run / "evaluation" / "metrics_summary.json").exists()
    if name == "localcontrast_2d":  # rank 0 writes the round's pseudo-labels; every rank trains on them
        folder = run / "pseudo_labels" / "round_1"
        assert len(list(folder.glob("*.nii.gz"))) == 10 and (folder / "pseudo_labels.json").is_file()
        assert not list(folder.glob(".*")), "a temporary file was left behind"
        assert out.count("pseudo-labels of 10 volumes (round 1)") == 1, out[-3000:]  # predicted once, by rank 0
        counts = re.findall(r"joint round 1: (\d+) pseudo-labelled slices", out)  # each rank read the files back
        assert len(counts) == 2 and len(set(counts)) == 1, out[-3000:]


def test_crossmatch_sigkill_then_same_command_resumes_to_the_same_weights(tmp_path):
    b = _copy("crossmatch_3d", tmp_path)
    configs = ["configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"]
    args = ["--max_iterations", "40", "--val_interval", "4", "--num_workers", "0", "--log_interval", "4",
            "--batch_size", "2", "--image_size", "32", "--amp", "False", "--run", "['$@train#trainer.run()']"]
    _ok(run_bundle(b, configs, *args, "--run_name", "straight"))
    ckpt = b / "runs" / "killed" / "models" / "checkpoint.pt"
    kill_mid_run(b, configs, [*args, "--run_name", "killed"], ckpt, 8, 36)
    assert not (b / "runs" / "killed" / "FINISHED").exists()
    out = _ok(run_bundle(b, configs, *args, "--run_name", "killed"))
    assert "resumed from" in out
    a = torch.load(b / "runs" / "straight" / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    k = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert a["engine"]["iteration"] == k["engine"]["iteration"] == 40
    for key, t in a["network"].items():
        assert torch.allclose(t.float(), k["network"][key].float(), atol=1e-5), key


def test_crossmatch_mlflow_tracking(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    b = _copy("crossmatch_3d", tmp_path)
    _ok(run_bundle(b, ["configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"], *CM_TINY,
                   "--image_size", "32", "--run_name", "tracked", "--tracking", "mlflow"))
    db = b / "runs" / "tracked" / "mlruns.db"
    assert db.exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    metrics = set().union(*(r.data.metrics for r in runs))
    assert "train_loss" in metrics and "val_mean_dice" in metrics
    history = [m for r in runs for m in client.get_metric_history(r.info.run_id, "train_loss")]
    assert len(history) >= 6  # one per iteration
    assert any(r.data.params for r in runs)


def test_crossmatch_diverging_loss_stops_with_a_clear_message(tmp_path):
    b = _copy("crossmatch_3d", tmp_path)
    proc = run_bundle(b, ["configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"], *CM_TINY,
                      "--image_size", "32", "--learning_rate", "1e30", "--run_name", "diverged")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "training stopped before the update" in text and ("nan" in text or "inf" in text), text[-3000:]
    assert not (b / "runs" / "diverged" / "FINISHED").exists()
