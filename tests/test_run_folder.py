# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""A run folder is held by one run at a time: a second run of the same name stops instead of overwriting it."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
from conftest import BUNDLE_NAMES, BUNDLES, import_bundle, run_bundle

NAMES = list(BUNDLE_NAMES)


def _run_folder(name: str):
    """The bundle's ``scripts.common.run_folder``."""
    import_bundle(name)
    return importlib.import_module("scripts.common.run_folder")


def _holder(name: str, root, seconds: float) -> subprocess.Popen:
    """Another process that takes ``root/run`` and keeps it for ``seconds`` (it prints once it holds it)."""
    code = ("import sys, time; from scripts.common.run_folder import resolve_run_dir; "
            f"print(resolve_run_dir({str(root)!r}, 'run'), flush=True); time.sleep({seconds})")
    env = {**os.environ, "PYTHONPATH": str(BUNDLES / name)}
    env.pop("RANK", None)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == str(root / "run")
    return proc


@pytest.mark.parametrize("name", NAMES)
def test_a_folder_in_use_stops_a_second_run_and_is_freed_at_exit(name, tmp_path, restore_scripts, monkeypatch):
    run_folder = _run_folder(name)
    monkeypatch.delenv("RANK", raising=False)
    marker = tmp_path / "run" / run_folder.RUNNING_MARKER
    holder = _holder(name, tmp_path, 60)
    try:
        assert marker.read_text() == f"{holder.pid} {platform.node()}"
        with pytest.raises(run_folder.RunFolderBusyError, match=rf"in use by another run \(process {holder.pid} holds"):
            run_folder.resolve_run_dir(str(tmp_path), "run")
        assert getattr(run_folder.RunFolderBusyError, "brief_report", False)  # reported without a traceback
        # under torchrun the other ranks share rank 0's folder
        monkeypatch.setenv("RANK", "1")
        assert run_folder.resolve_run_dir(str(tmp_path), "run") == str(tmp_path / "run")
        monkeypatch.delenv("RANK")
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    # SIGTERM skips atexit: the marker of the ended process is stale and taken over (the run resumes in place)
    assert marker.exists()
    assert run_folder.resolve_run_dir(str(tmp_path), "run") == str(tmp_path / "run")
    assert marker.read_text() == f"{os.getpid()} {platform.node()}"
    # this process again (MONAI Label trains in its own process, one run after another)
    assert run_folder.resolve_run_dir(str(tmp_path), "run") == str(tmp_path / "run")
    # a process that exits normally removes its marker
    other = tmp_path / "other"
    holder = _holder(name, other, 0)
    assert holder.wait(timeout=60) == 0
    assert (other / "run").is_dir() and not (other / "run" / run_folder.RUNNING_MARKER).exists()


@pytest.mark.parametrize("name", NAMES)
def test_markers_of_other_machines_and_of_finished_runs(name, tmp_path, restore_scripts, monkeypatch):
    run_folder = _run_folder(name)
    monkeypatch.delenv("RANK", raising=False)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_folder.RUNNING_MARKER).write_text("4242 another-host")
    with pytest.raises(run_folder.RunFolderBusyError, match="process 4242 on another-host"):
        run_folder.resolve_run_dir(str(tmp_path), "run")
    # a finished run is never written again: the next run goes to run_2, and --overwrite takes the folder over
    (folder / run_folder.FINISHED_MARKER).touch()
    assert run_folder.resolve_run_dir(str(tmp_path), "run") == str(tmp_path / "run_2")
    assert run_folder.resolve_run_dir(str(tmp_path), "run", overwrite=True) == str(folder)
    assert (folder / run_folder.RUNNING_MARKER).read_text().startswith(f"{os.getpid()} ")
    # an unreadable marker is stale
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / run_folder.RUNNING_MARKER).write_text("garbage")
    assert run_folder.resolve_run_dir(str(tmp_path), "x") == str(tmp_path / "x")



@pytest.mark.parametrize("name", NAMES)
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(name, tmp_path, restore_scripts, monkeypatch):
    run_folder = _run_folder(name)
    monkeypatch.delenv("RANK", raising=False)
    root = tmp_path / "runs"
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(run_folder.RunNameError, match="is not a plain folder name"):
            run_folder.resolve_run_dir(str(root), bad)
    assert not any(tmp_path.iterdir())  # no folder was made, inside the runs folder or beside it
    assert getattr(run_folder.RunNameError, "brief_report", False)  # reported without a traceback
    assert run_folder.resolve_run_dir(str(root), "a.b") == str(root / "a.b")  # a plain name with a dot is fine


@pytest.mark.slow
def test_the_command_line_says_the_folder_is_busy_in_a_few_lines(tmp_path, monkeypatch):
    b = tmp_path / "switch_us"
    shutil.copytree(BUNDLES / "switch_us", b, ignore=shutil.ignore_patterns("runs", "data", "models", "predictions",
                                                                           "__pycache__"))
    busy = b / "predictions" / "busy"
    busy.mkdir(parents=True)
    (busy / "RUNNING").write_text(f"{os.getpid()} {platform.node()}")  # this test's process: alive
    monkeypatch.delenv("SSL_BUNDLES_TRACEBACK", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    image = tmp_path / "case.png"
    PIL.Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    start = time.time()
    proc = run_bundle(b, ["configs/inference.yaml"], "--run_name", "busy", "--input", str(image), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"RunFolderBusyError: {busy} is in use by another run (process {os.getpid()} holds" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in busy.iterdir()) == ["RUNNING"]  # nothing written there
    assert time.time() - start < 120
