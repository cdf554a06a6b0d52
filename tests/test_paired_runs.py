# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""``benchmarks/paired_runs.py``: paired run folders compared stage by stage, against hand-computed values."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
from conftest import REPO
from torch.utils.tensorboard import SummaryWriter

_spec = importlib.util.spec_from_file_location("paired_runs", REPO / "benchmarks" / "paired_runs.py")
paired_runs = importlib.util.module_from_spec(_spec)
sys.modules["paired_runs"] = paired_runs
_spec.loader.exec_module(paired_runs)


def _run(path, loss, val, test):
    writer = SummaryWriter(str(path))
    for step, value in enumerate(loss, 1):
        writer.add_scalar("train_loss", value, step)
    for step, value in enumerate(val, 1):
        writer.add_scalar("val_mean_dice", value, step)
    writer.close()
    (path / "evaluation").mkdir(parents=True)
    (path / "evaluation" / "metrics_summary.json").write_text(json.dumps({"metrics": {"dice": {"mean": test}}}))


def test_paired_differences_per_window_validation_and_test(tmp_path):
    # seed 1: A's loss 0.5 below B's over iterations 1-2, equal over 3-4; seed 2: 0.25 below, then 0.5 above
    _run(tmp_path / "a1", [1.0, 1.0, 0.5, 0.5], [0.5, 0.75], 0.75)
    _run(tmp_path / "b1", [1.5, 1.5, 0.5, 0.5], [0.5, 0.5], 0.5)
    _run(tmp_path / "a2", [1.0, 1.0, 1.0, 1.0], [0.25, 0.5], 0.5)
    _run(tmp_path / "b2", [1.25, 1.25, 0.5, 0.5], [0.5, 0.5], 0.5)
    report = paired_runs.compare(str(tmp_path / "a{seed}"), str(tmp_path / "b{seed}"), "1,2", "0,2,4")
    lines = report.splitlines()
    se = lambda x, y: abs(x - y) / 2  # noqa: E731 - the standard error of the mean of two differences x, y
    assert f"| train_loss, iterations 1-2 | 1.0000 | 1.3750 | -0.3750 | {se(-0.5, -0.25):.4f} | 0/2 |" in lines
    assert f"| train_loss, iterations 3-4 | 0.7500 | 0.5000 | +0.2500 | {se(0.0, 0.5):.4f} | 1/2 |" in lines
    assert f"| val_mean_dice, step 1 | 0.3750 | 0.5000 | -0.1250 | {se(0.0, -0.25):.4f} | 0/2 |" in lines
    assert f"| test Dice | 0.6250 | 0.5000 | +0.1250 | {se(0.25, 0.0):.4f} | 1/2 |" in lines
    assert paired_runs.paired_stats([0.1])[2] == 1 and math.isnan(paired_runs.paired_stats([0.1])[1])


def test_missing_runs_and_bad_arguments_are_clear(tmp_path):
    _run(tmp_path / "a1", [1.0], [0.5], 0.5)
    with pytest.raises(FileNotFoundError, match="no run folder"):
        paired_runs.compare(str(tmp_path / "a{seed}"), str(tmp_path / "b{seed}"), "1,2")
    # python-fire passes `--seeds 1` as an int
    for seeds in ("1", 1):
        with pytest.raises(ValueError, match="at least two seeds"):
            paired_runs.compare(str(tmp_path / "a{seed}"), str(tmp_path / "b{seed}"), seeds)
    with pytest.raises(ValueError, match="comma-separated integers"):
        paired_runs.compare(str(tmp_path / "a{seed}"), str(tmp_path / "b{seed}"), "1,x")
    with pytest.raises(KeyError, match="no TensorBoard scalar 'loss'"):
        paired_runs.read_scalars(tmp_path / "a1", "train_loss", "loss")


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "paired_runs.py"), str(tmp_path / "a{seed}"),
                           str(tmp_path / "b{seed}"), "--seeds", "1,2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no run folder" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # a mistyped option is refused before anything is read, with the closest option
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "paired_runs.py"), str(tmp_path / "a{seed}"),
                           str(tmp_path / "b{seed}"), "--seeds", "1,2", "--windowz", "0,9"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "unknown option --windowz; did you mean --windows?" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_selftrain_probe_refuses_bad_values_before_any_work(tmp_path):
    import subprocess

    script = str(REPO / "benchmarks" / "selftrain_from_weights.py")
    for args, message in ((["--seed", "abc"], "--seed must be int, got 'abc'"),
                          (["--variant", "bf8"], "--variant must be one of amp, fp32"),
                          ([], "no weights at")):
        proc = subprocess.run([sys.executable, script, str(tmp_path / "missing.pt"), "--workdir", str(tmp_path / "w"),
                               *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "w").exists()
