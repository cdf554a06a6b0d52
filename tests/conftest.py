# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers.

Both bundles own a package named ``scripts`` (the Model Zoo convention). A test module imports the one it
needs with :func:`import_bundle`, which unloads any other ``scripts`` package first; objects a module
imported stay bound to their own bundle.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SHARED_DATA = REPO.parent / "shared" / "data"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def import_bundle(name: str):
    """Import and return the ``scripts`` package of ``bundles/<name>``, unloading any other one."""
    for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[mod]
    bundle_paths = {str(p) for p in BUNDLES.iterdir()}
    sys.path[:] = [p for p in sys.path if p not in bundle_paths]
    sys.path.insert(0, str(BUNDLES / name))
    importlib.invalidate_caches()
    return importlib.import_module("scripts")


def run_bundle(bundle_dir: Path, configs: list[str], *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle run`` in ``bundle_dir`` in a subprocess; return the completed process."""
    config_arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, *overrides]
    env = {**os.environ, "PYTHONPATH": str(bundle_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=bundle_dir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared_data() -> Path:
    """The real development data beside the repository; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
