# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Model Zoo packaging and verification: ``scripts/package_bundle.py`` and ``scripts/verify_bundle.py``.

Both tools run as files in subprocesses (as users run them), on copies of the bundles with random weights,
so the repository's bundle folders are never modified. The clean-room test unzips a package into an empty
folder and runs the demo training and inference from there with only that folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import BUNDLE_NAMES as ALL_BUNDLES
from conftest import BUNDLES, REPO, run_bundle
from PIL import Image

PACKAGE = REPO / "scripts" / "package_bundle.py"
VERIFY = REPO / "scripts" / "verify_bundle.py"
RUN_OUTPUTS = ("runs", "data", "models", "eval", "predictions", "__pycache__", "mlruns")
TINY = ("--image_size", "64", "--batch_size", "2", "--pretrain_iterations", "4", "--selftrain_iterations", "4",
        "--val_interval", "4", "--num_workers", "0", "--log_interval", "2", "--max_pictures", "1")


def _bundle_ready(name: str) -> bool:
    """Whether a bundle has the files these tests need (crossmatch_3d is still being written)."""
    return all((BUNDLES / name / rel).is_file() for rel in ("configs/metadata.json", "configs/inference.yaml"))


BUNDLE_NAMES = [
    pytest.param(name, marks=pytest.mark.skipif(not _bundle_ready(name), reason=f"{name} is not complete yet"))
    for name in ALL_BUNDLES
]


def _tool(script: Path, *args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repository tool as a file; return the completed process (output as text)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _copy_bundle(name: str, dst_root: Path) -> Path:
    """Copy a bundle without its run outputs and give it random weights (``models/model.pt``)."""
    dst = dst_root / name
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns(*RUN_OUTPUTS, "*.pyc"))
    code = (
        "import os, sys, torch\n"
        "from monai.bundle import ConfigParser\n"
        "torch.manual_seed(0)\n"
        "parser = ConfigParser()\n"
        "parser.read_config('configs/inference.yaml')\n"
        "net = parser.get_parsed_content('network_def')\n"
        "os.makedirs('models', exist_ok=True)\n"
        "torch.save({'model': net.state_dict()}, 'models/model.pt')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(dst), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=dst, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, _output(proc)[-3000:]
    return dst


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime and md5 of every file below a folder."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def switch_copy(tmp_path_factory) -> Path:
    """A copy of switch_us with random weights, shared by the module (tests copy it again to change it)."""
    return _copy_bundle("switch_us", tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def bundle_copy(switch_copy, tmp_path_factory):
    """``bundle_copy(name)``: a copy of that bundle with random weights, made once for the module (not modified)."""
    copies = {"switch_us": switch_copy}

    def get(name: str) -> Path:
        if name not in copies:
            copies[name] = _copy_bundle(name, tmp_path_factory.mktemp("bundles"))
        return copies[name]

    return get


@pytest.fixture
def switch_scratch(switch_copy, tmp_path) -> Path:
    """A private copy of ``switch_copy`` that a test may modify."""
    return Path(shutil.copytree(switch_copy, tmp_path / "switch_us"))


# ----------------------------------------------------------------------------------------------------------------
# packaging


def test_packaging_is_deterministic_and_leaves_run_outputs_out(switch_scratch, tmp_path):
    b = switch_scratch
    junk = ["runs/demo/models/model.pt", "data/phantom_us/images/a.png", "predictions/inference/x_seg.png",
            "eval/metrics.csv", "scripts/__pycache__/data.cpython-311.pyc", "models/model_pretrain.pt",
            "models/model.ts", "configs/monailabel_train.json", "mlruns/0/meta.yaml", "scripts/stale.pyc"]
    for rel in junk:
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(b"run output")

    first = _tool(PACKAGE, b, "--out_dir", tmp_path / "a")
    assert first.returncode == 0, _output(first)
    os.utime(b / "configs" / "metadata.json", (1_000_000, 1_000_000))  # other timestamps, same content
    os.utime(b / "LICENSE", None)
    second = _tool(PACKAGE, b, "--out_dir", tmp_path / "b")
    assert second.returncode == 0, _output(second)

    version = json.loads((b / "configs" / "metadata.json").read_text())["version"]
    zip_a, zip_b = tmp_path / "a" / f"switch_us_v{version}.zip", tmp_path / "b" / f"switch_us_v{version}.zip"
    assert zip_a.read_bytes() == zip_b.read_bytes(), "two packagings of the same bundle differ"

    with zipfile.ZipFile(zip_a) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        infos = zf.infolist()
        assert zf.read("switch_us/models/model.pt") == (b / "models" / "model.pt").read_bytes()
    assert names == sorted(names)
    assert all(n.startswith("switch_us/") for n in names)
    assert len({i.date_time for i in infos}) == 1
    for rel in ("configs/metadata.json", "configs/inference.yaml", "LICENSE", "docs/README.md",
                "scripts/__init__.py", "scripts/common/__init__.py", "scripts/common/runtime.py", "models/model.pt"):
        assert f"switch_us/{rel}" in names
    for rel in junk:
        assert f"switch_us/{rel}" not in names
    assert not any(n.endswith(".pyc") or "/runs/" in n or "/data/" in n for n in names)


def test_packaging_errors_are_clear(switch_scratch, tmp_path):
    out = tmp_path / "dist"
    assert _tool(PACKAGE, switch_scratch, "--out_dir", out).returncode == 0
    again = _tool(PACKAGE, switch_scratch, "--out_dir", out)
    assert again.returncode == 2 and "--overwrite True" in _output(again) and "Traceback" not in _output(again)
    assert _tool(PACKAGE, switch_scratch, "--out_dir", out, "--overwrite", "True").returncode == 0
    # "--overwrite no" is a (true) string to python-fire: refused, the archive stays as it is
    archive = next(out.glob("*.zip"))
    before = archive.read_bytes()
    for flag, value in [("--overwrite", "no"), ("--weights", "maybe")]:
        proc = _tool(PACKAGE, switch_scratch, "--out_dir", out, flag, value)
        assert proc.returncode == 2 and f"{flag} must be bool" in _output(proc), _output(proc)
    assert archive.read_bytes() == before
    proc = _tool(PACKAGE, switch_scratch, "--out_dir", archive)
    assert proc.returncode == 2 and "is a file, not a folder" in _output(proc) and "Traceback" not in _output(proc)

    not_bundle = tmp_path / "not_a_bundle"
    not_bundle.mkdir()
    proc = _tool(PACKAGE, not_bundle, "--out_dir", out)
    assert proc.returncode == 2 and "configs/metadata.json is missing" in _output(proc)

    (switch_scratch / "models" / "model.pt").unlink()
    proc = _tool(PACKAGE, switch_scratch, "--out_dir", tmp_path / "w", "--weights", "True")
    assert proc.returncode == 2 and "models/model.pt is missing" in _output(proc)
    proc = _tool(PACKAGE, switch_scratch, "--out_dir", tmp_path / "w", "--large_files_url", "https://example.org/m.pt")
    assert proc.returncode == 2 and "models/model.pt is missing" in _output(proc)
    assert not list(tmp_path.glob("w/*.zip"))


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_every_bundle_packages_its_code_configs_and_weights(name, bundle_copy, tmp_path):
    """Each bundle's archive holds every file of its configs and code (the shared ``scripts/common`` included), its
    LICENSE and weights, and passes the Zoo's file, version and pin checks once unzipped."""
    b = bundle_copy(name)
    proc = _tool(PACKAGE, b, "--out_dir", tmp_path / "dist")
    assert proc.returncode == 0, _output(proc)
    (archive,) = (tmp_path / "dist").glob(f"{name}_v*.zip")
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    expected = {f"{name}/{p.relative_to(b).as_posix()}" for part in ("configs", "scripts") for p in (b / part).rglob("*")
                if p.is_file() and p.suffix != ".pyc"}
    assert expected <= names, sorted(expected - names)
    for rel in ("LICENSE", "models/model.pt", "scripts/common/__init__.py", "configs/inference.yaml"):
        assert f"{name}/{rel}" in names, rel
    proc = _tool(VERIFY, tmp_path / "unzipped" / name, "--checks", "files,version,pins")
    assert proc.returncode == 0 and "PASS files" in _output(proc), _output(proc)


@pytest.mark.parametrize("hash_type", ["md5", "sha256"])
def test_large_files_mode(switch_copy, tmp_path, hash_type):
    url = "https://example.org/switch_us/model.pt"
    proc = _tool(PACKAGE, switch_copy, "--out_dir", tmp_path, "--large_files_url", url, "--hash_type", hash_type)
    assert proc.returncode == 0, _output(proc)
    (archive,) = tmp_path.glob("switch_us_v*.zip")
    with zipfile.ZipFile(archive) as zf:
        assert "switch_us/models/model.pt" not in zf.namelist()
        spec = yaml.safe_load(zf.read("switch_us/large_files.yml"))
        zf.extractall(tmp_path / "unzipped")
    expected = hashlib.new(hash_type, (switch_copy / "models" / "model.pt").read_bytes()).hexdigest()
    assert spec == {"large_files": [{"path": "models/model.pt", "url": url, "hash_val": expected, "hash_type": hash_type}]}
    assert not (switch_copy / "large_files.yml").exists(), "the bundle folder itself must not change"

    # the Zoo's file check accepts a large_files.yml naming the weights in place of the weights
    proc = _tool(VERIFY, tmp_path / "unzipped" / "switch_us", "--checks", "files,version,pins")
    assert proc.returncode == 0, _output(proc)
    assert "PASS files" in _output(proc) and "large_files.yml" in _output(proc)


# ----------------------------------------------------------------------------------------------------------------
# verification


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_verify_passes_with_random_weights(name, bundle_copy):
    b = bundle_copy(name)
    before = _snapshot(b)
    proc = _tool(VERIFY, b, timeout=900)
    out = _output(proc)
    assert proc.returncode == 0, out[-6000:]
    for check in ("files", "version", "pins", "metadata", "net_in_out", "torchscript", "onnx"):
        assert f"PASS {check}:" in out, out[-6000:]
    assert _snapshot(b) == before, "verify_bundle changed the bundle's files"


def _drop_license(b: Path) -> None:
    (b / "LICENSE").unlink()


def _edit_metadata(**changes):
    def edit(b: Path) -> None:
        path = b / "configs" / "metadata.json"
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            target = meta
            *parents, last = key.split("#")
            for k in parents:
                target = target[k]
            target[last] = value
        path.write_text(json.dumps(meta, indent=4))

    return edit


BROKEN = [
    pytest.param(_drop_license, ["--checks", "files"], "files", "LICENSE", id="missing-license"),
    pytest.param(_edit_metadata(version="9.9.9"), ["--checks", "version"], "version", "'9.9.9' is not in changelog",
                 id="version-not-in-changelog"),
    pytest.param(_edit_metadata(pytorch_version="2.13.0+cu130"), ["--checks", "pins"], "pins", "+cu130",
                 id="local-version-tag"),
    pytest.param(_edit_metadata(**{"network_data_format#inputs#image#num_channels": "one"}), ["--checks", "metadata"],
                 "metadata", "network_data_format.inputs.image.num_channels", id="bad-metadata-field",
                 marks=pytest.mark.slow),
    pytest.param(None, ["--checks", "net_in_out", "--override", '{"num_classes": 3}'], "net_in_out",
                 "output channel number `3` doesn't match: `2`", id="wrong-output-channels", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("breaker", "args", "check", "message"), BROKEN)
def test_verify_fails_on_broken_copies(switch_scratch, breaker, args, check, message):
    if breaker is not None:
        breaker(switch_scratch)
    proc = _tool(VERIFY, switch_scratch, *args)
    out = _output(proc)
    assert proc.returncode == 1, out[-4000:]
    assert f"FAIL {check}:" in out and message in out, out[-4000:]


def test_verify_usage_errors(switch_copy, tmp_path):
    proc = _tool(VERIFY, switch_copy, "--checks", "files,nonsense")
    assert proc.returncode == 2 and "unknown check" in _output(proc)
    proc = _tool(VERIFY, switch_copy, "--checks", "metadata", "--schema", tmp_path / "absent.json")
    assert proc.returncode == 2 and "not found" in _output(proc)
    proc = _tool(VERIFY, tmp_path / "absent_bundle")
    assert proc.returncode == 2 and "is not a folder" in _output(proc)
    proc = _tool(VERIFY, switch_copy, "--checks", "files", "--jobs", "0")
    assert proc.returncode == 2 and "--jobs must be a whole number of at least 1, got 0" in _output(proc)
    # values of the wrong type are refused in one line before any check runs
    for flag, value, message in [("--jobs", "abc", "--jobs must be int or None, got 'abc'"),
                                 ("--random_weights", "yes", "--random_weights must be bool, got 'yes'"),
                                 ("--rtol", "abc", "--rtol must be float, got 'abc'")]:
        proc = _tool(VERIFY, switch_copy, "--checks", "net_in_out", flag, value)
        assert proc.returncode == 2 and message in _output(proc) and "Traceback" not in _output(proc), _output(proc)
    # --keep_dir: a file, or a folder inside the bundle, is refused, and nothing is created in the bundle
    proc = _tool(VERIFY, switch_copy, "--checks", "files", "--keep_dir", switch_copy / "configs" / "train.yaml")
    assert proc.returncode == 2 and "is a file, not a folder" in _output(proc)
    proc = _tool(VERIFY, switch_copy, "--checks", "files", "--keep_dir", switch_copy / "exports")
    assert proc.returncode == 2 and "outside the bundle" in _output(proc) and not (switch_copy / "exports").exists()


def test_verify_reports_the_cause_of_a_wrapped_error():
    """MONAI wraps a config function's error in "Failed to instantiate component"; the report keeps the cause."""
    spec = importlib.util.spec_from_file_location("verify_bundle_under_test", VERIFY)
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(tool)
    finally:
        del sys.modules[spec.name]
    chained = (
        "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
        "ValueError: models/model.pt holds no V-Net weights\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n  File \"y.py\", line 2\n"
        "RuntimeError: Failed to instantiate component 'scripts.networks.width_from_checkpoint' with keywords: a\n"
    )
    line = tool._error_line(chained)
    assert line.startswith("RuntimeError: Failed to instantiate component")
    assert line.endswith("(caused by ValueError: models/model.pt holds no V-Net weights)")
    handled = chained.replace("direct cause of", "during handling of the above exception, another exception occurred")
    assert "caused by" not in tool._error_line(handled)  # only a direct cause is reported as one
    assert tool._error_line("just some output\nlast line") == "just some output | last line"


# ----------------------------------------------------------------------------------------------------------------
# clean room


@pytest.mark.slow
def test_clean_room_demo_and_inference_from_the_package(switch_copy, tmp_path):
    dist = tmp_path / "dist"
    proc = _tool(PACKAGE, switch_copy, "--out_dir", dist)
    assert proc.returncode == 0, _output(proc)
    (archive,) = dist.glob("switch_us_v*.zip")
    room = tmp_path / "room"
    room.mkdir()
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(room)
    b = room / "switch_us"
    random_weights = (b / "models" / "model.pt").read_bytes()

    # nothing of the repository on the path: `scripts` is the unzipped bundle's
    probe = subprocess.run(
        [sys.executable, "-c", "import json, sys, scripts; print(json.dumps([scripts.__file__, sys.path]))"],
        cwd=b, env={**os.environ, "PYTHONPATH": str(b)}, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, _output(probe)
    scripts_file, path = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(scripts_file).resolve().is_relative_to(b.resolve())
    env_prefix = Path(sys.prefix).resolve()  # the interpreter's own environment may live in the checkout (.venv)
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(REPO)
                and not Path(p).resolve().is_relative_to(env_prefix)], path

    train = run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], *TINY, "--publish_model", "True", timeout=900)
    assert train.returncode == 0, (train.stdout + train.stderr)[-5000:]
    assert (b / "runs" / "demo" / "FINISHED").exists()
    assert (b / "models" / "model.pt").read_bytes() != random_weights, "training did not publish models/model.pt"

    image = sorted((b / "data" / "phantom_us" / "images").glob("*.png"))[0]
    infer = run_bundle(b, ["configs/inference.yaml"], "--input", str(image), timeout=600)
    assert infer.returncode == 0, (infer.stdout + infer.stderr)[-5000:]
    seg = b / "predictions" / "inference" / f"{image.stem}_seg.png"
    assert seg.is_file()
    assert Image.open(seg).size == Image.open(image).size


def test_torchscript_comparison_detects_a_difference(tmp_path):
    """The comparison worker that the torchscript check uses reports a mismatch (it is not vacuous)."""
    code = (
        "import sys, numpy as np, torch\n"
        "torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 2, 3, padding=1)), sys.argv[1] + '/m.ts')\n"
        "x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)\n"
        "np.save(sys.argv[1] + '/x.npy', x)\n"
        "np.save(sys.argv[1] + '/y.npy', np.zeros((1, 2, 8, 8), np.float32) + 1.0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, _output(proc)
    args = {"model": str(tmp_path / "m.ts"), "input": str(tmp_path / "x.npy"), "expected": str(tmp_path / "y.npy"),
            "rtol": 1e-4, "atol": 1e-4}
    proc = _tool(VERIFY, "--worker", "compare_torchscript", json.dumps(args))
    assert proc.returncode == 0, _output(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["ok"] is False and "max |diff|" in result["detail"]
