# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The one source of the bundles' shared runtime: ``bundle_common`` and its generated copies (``scripts/sync_common.py``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import sync_common  # the repository's scripts/ folder is on sys.path (conftest.py)

REPO = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path) -> Path:
    """A copy of the repository holding only what the generator reads and writes."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "bundle_common", root / "bundle_common")
    for bundle in sync_common.bundle_dirs(REPO):
        (root / "bundles" / bundle.name / "configs").mkdir(parents=True)
        shutil.copy(bundle / "configs" / "metadata.json", root / "bundles" / bundle.name / "configs")
        shutil.copytree(bundle / "scripts" / "common", root / "bundles" / bundle.name / "scripts" / "common")
    return root


def test_every_bundle_holds_an_identical_generated_copy():
    names = {p.name for p in (REPO / "bundle_common").glob("*.py")}
    bundles = sync_common.bundle_dirs(REPO)
    assert {b.name for b in bundles} >= {"switch_us", "crossmatch_3d"}
    for bundle in bundles:
        copies = sorted((bundle / "scripts" / "common").glob("*.py"))
        assert {p.name for p in copies} == names, bundle
        for copy in copies:
            text = copy.read_text(encoding="utf-8")
            assert text.splitlines()[0] == sync_common.header(copy.name).rstrip("\n"), copy
            assert "bundles/" not in text.splitlines()[0]  # a bundle names nothing of its siblings
            assert text == sync_common.header(copy.name) + (REPO / "bundle_common" / copy.name).read_text(encoding="utf-8")
    assert sync_common.differences(REPO) == []


def test_check_fails_on_one_changed_byte_and_sync_repairs_it(tmp_path, capsys):
    root = _tree(tmp_path)
    assert sync_common.sync(check=True, repo=str(root)) == 0
    copy = root / "bundles" / "switch_us" / "scripts" / "common" / "runtime.py"
    data = bytearray(copy.read_bytes())
    data[-2] = ord("X") if data[-2] != ord("X") else ord("Y")  # one byte of the copy
    copy.write_bytes(bytes(data))
    assert sync_common.sync(check=True, repo=str(root)) == 1
    out = capsys.readouterr().out
    assert f"differs from bundle_common/runtime.py: {copy}" in out and "out of date" in out
    assert sync_common.sync(repo=str(root)) == 0
    assert sync_common.sync(check=True, repo=str(root)) == 0


def test_check_reports_missing_and_stale_copies(tmp_path):
    root = _tree(tmp_path)
    (root / "bundles" / "crossmatch_3d" / "scripts" / "common" / "metrics.py").unlink()
    (root / "bundles" / "crossmatch_3d" / "scripts" / "common" / "old_module.py").write_text("x = 1\n")
    problems = sync_common.differences(root)
    assert any(p.startswith("missing:") and p.endswith("metrics.py") for p in problems)
    assert any(p.startswith("no source") and p.endswith("old_module.py") for p in problems)
    sync_common.sync(repo=str(root))
    assert sync_common.differences(root) == []
    assert not (root / "bundles" / "crossmatch_3d" / "scripts" / "common" / "old_module.py").exists()


def test_command_line_check_and_unknown_option():
    ok = subprocess.run([sys.executable, "scripts/sync_common.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "scripts/sync_common.py", "--chek"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean --check" in bad.stderr and "Traceback" not in bad.stderr
