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
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
BUNDLE_NAMES = tuple(sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file()))
"""Every bundle of the repository (the folders under ``bundles/`` with ``configs/metadata.json``)."""
TWO_D_BUNDLES = ("mgcc_us", "switch_us")
"""The bundles that train on 2D images (the others on volumes)."""
SHARED_DATA = REPO.parent / "shared" / "data"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"

# the repository's tools run as files and import their sibling ``cli_args``; tests load them with importlib
if str(REPO / "scripts") not in sys.path:
    sys.path.append(str(REPO / "scripts"))


def import_bundle(name: str):
    """Import and return the ``scripts`` package of ``bundles/<name>``, unloading any other one."""
    for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[mod]
    bundle_paths = {str(p) for p in BUNDLES.iterdir()}
    sys.path[:] = [p for p in sys.path if p not in bundle_paths]
    sys.path.insert(0, str(BUNDLES / name))
    importlib.invalidate_caches()
    return importlib.import_module("scripts")


@pytest.fixture
def restore_scripts():
    """Put back whichever bundle's ``scripts`` package (and ``sys.path``) was loaded before the test.

    For tests that :func:`import_bundle` inside the test while their module imported another bundle at load time.
    """
    modules = {m: mod for m, mod in sys.modules.items() if m == "scripts" or m.startswith("scripts.")}
    path = list(sys.path)
    yield
    for m in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[m]
    sys.modules.update(modules)
    sys.path[:] = path


def squares(n: int, size: int = 32, seed: int = 0):
    """``n`` noisy 2D images ``(n, 1, size, size)`` with a bright 12-pixel square each, and its binary label."""
    import torch

    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 1, size, size, generator=g) * 0.3
    lab = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(2, size - 14, (2,), generator=g))
        img[i, :, y : y + 12, x : x + 12] += 0.6
        lab[i, :, y : y + 12, x : x + 12] = 1
    return img, lab


def run_bundle(bundle_dir: Path, configs: list[str], *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle run`` in ``bundle_dir`` in a subprocess; return the completed process."""
    config_arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, *overrides]
    env = {**os.environ, "PYTHONPATH": str(bundle_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=bundle_dir, env=env, capture_output=True, text=True, timeout=timeout)


MONAILABEL_SETUP = REPO / "scripts" / "setup_monailabel.sh"


def kill_mid_run(bundle_dir: Path, configs: list[str], overrides: list[str], checkpoint: Path, first: int, last: int,
                 timeout: float = 300) -> int:
    """Start ``monai.bundle run`` and SIGKILL it once ``checkpoint`` holds an iteration in ``[first, last)``.

    Returns the iteration of the checkpoint at the kill; fails the test when the run ends before that.
    """
    import signal
    import time

    import torch

    config_arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, *overrides]
    env = {**os.environ, "PYTHONPATH": str(bundle_dir)}
    proc = subprocess.Popen(cmd, cwd=bundle_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists():
            try:
                it = torch.load(checkpoint, map_location="cpu", weights_only=False)["engine"]["iteration"]
            except Exception:  # being replaced right now
                it = 0
            if first <= it < last:
                proc.send_signal(signal.SIGKILL)
                killed_at = it
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    return killed_at


# The modules whose end-to-end demo runs take minutes; they run first so that, with pytest-xdist, they start
# together on different workers instead of one of them starting last and running alone.
FIRST_MODULES = ("test_switch_workflows.py", "test_crossmatch_workflows.py", "test_localcontrast_workflows.py")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (the default in ``pyproject.toml``): pytest-xdist's own count (one worker per core), at most four.

    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still sets the count. Each worker gets an equal share of the cores as torch
    threads (:func:`pytest_configure`). On the 2-core CI machine two single-threaded workers run the suite in 14 min
    where one two-threaded pytest took 23 (README, "Development").
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    from xdist.plugin import pytest_xdist_auto_num_workers as xdist_count

    return max(1, min(4, xdist_count(config)))


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, give torch (and the bundle subprocesses it starts) the worker's share of the cores.

    An ``OMP_NUM_THREADS`` set by the caller is kept.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // int(workers)))


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the slow workflow modules first, and start making the MONAI Label venv when a selected test needs it.

    ``scripts/setup_monailabel.sh`` spends minutes downloading and unpacking wheels, mostly waiting on I/O; started
    at collection (at low CPU priority) it overlaps the CPU-bound tests that run first. The ``monailabel_venv``
    fixture runs the same script later, which waits on the script's lock and then reuses the finished venv (or
    reports the failure itself). Under pytest-xdist only the first worker starts it. ``SSL_MONAI_NO_PREFETCH=1``
    turns this off.
    """
    rank = {name: i for i, name in enumerate(FIRST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    if os.environ.get("SSL_MONAI_NO_PREFETCH") or not any(i.get_closest_marker("monailabel") for i in items):
        return
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    log = Path(tempfile.gettempdir()) / "ssl-monai-bundles-setup_monailabel.log"
    with open(log, "w") as err:  # the child keeps its own copy of the descriptor
        config._monailabel_prefetch = subprocess.Popen(  # type: ignore[attr-defined]
            ["nice", "-n", "10", "bash", str(MONAILABEL_SETUP)], stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a background venv set-up that is still running (the script starts over cleanly next time)."""
    proc = getattr(session.config, "_monailabel_prefetch", None)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.fixture
def shared_data() -> Path:
    """The real development data beside the repository; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
