# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Every bundle served by a real MONAI Label 0.8.5 server (the ``monaibundle`` sample app) on 127.0.0.1.

The server runs in its own virtual environment, made by ``scripts/setup_monailabel.sh`` (about 5 minutes and
8 GB the first time, seconds afterwards). For each bundle the test

1. copies the bundle into ``apps/monaibundle/model/<name>`` of a fresh copy of the sample app and trains tiny
   weights there with the bundle's demo overlay (project environment, ``models/model.pt``);
2. writes a studies folder: phantom images with labels under ``labels/final/`` for training, plus one image for
   inference (a non-square crop for the 2D bundle);
3. starts ``monailabel start_server`` offline (``--conf zoo_source github --conf sam2 false``), waits for
   ``/info/``, checks the model's dimension and labels, runs ``/infer/`` and a one-epoch ``/train/``;
4. always stops the server (its whole process group).

One server per bundle: MONAI Label trains a model on every labelled image of the datastore, so a 2D and a 3D
bundle cannot share one studies folder for training.

MONAI Label's train request sets only ``max_epochs`` (and data, device, handlers); the served copy's
``configs/train.yaml`` is therefore the bundle's train + demo configs merged, with the same tiny overrides as the
weights' run, so that one epoch takes seconds. ``configs/inference.yaml`` is served unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLES, REPO, run_bundle
from monai.bundle import ConfigParser
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.monailabel]

SETUP_SCRIPT = REPO / "scripts" / "setup_monailabel.sh"
SETUP_TIMEOUT = 1800  # the first creation downloads and unpacks about 8 GB
REGISTRY_UNREACHABLE = 3  # exit status of setup_monailabel.sh when pip cannot reach the package registries
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 240
INFER_TIMEOUT = 300
TRAIN_TIMEOUT = 420
TRAIN_WEIGHTS_TIMEOUT = 900
REQUIRED_CONFIGS = ("train.yaml", "demo.yaml", "inference.yaml", "metadata.json")
COPY_IGNORE = shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__",
                                     "monailabel_train.json")

TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class BundleCase:
    """How one bundle is trained, fed and checked.

    Attributes:
        name: the bundle folder name (also the MONAI Label model name).
        dimension: spatial dimensions /info/ must report.
        tiny: overrides of the weights' demo run, written into the served train.yaml as well; keys the bundle's
            merged train + demo config lacks are dropped (an unknown override is an error for our bundles).
        serve: further overrides of the served train.yaml only (one MONAI Label epoch).
        labelled: labelled studies to write (MONAI Label splits them with ``val_split``).
        val_split: the train request's validation share.
        ext: the studies' file type (default: PNG for a 2D bundle, NIfTI for a 3D one); a 2D network can serve
            volumes slice by slice.
    """

    name: str
    dimension: int
    tiny: dict[str, object]
    serve: dict[str, object] = field(default_factory=dict)
    labelled: int = 4
    val_split: float = 0.25
    ext: str | None = None

    @property
    def suffix(self) -> str:
        """The studies' file extension."""
        return self.ext or (".png" if self.dimension == 2 else ".nii.gz")


CASES = {
    "switch_us": BundleCase(
        name="switch_us",
        dimension=2,
        tiny={"image_size": 64, "batch_size": 2, "pretrain_iterations": 6, "selftrain_iterations": 6,
              "val_interval": 6, "num_workers": 0, "log_interval": 3, "max_pictures": 2},
        # one epoch (= val_interval iterations) crosses from pre-training to self-training
        serve={"val_interval": 4, "pretrain_iterations": 2, "selftrain_iterations": 2},
    ),
    "mgcc_us": BundleCase(
        name="mgcc_us",
        dimension=2,
        tiny={"image_size": 64, "batch_size": 2, "max_iterations": 6, "val_interval": 6, "num_workers": 0,
              "log_interval": 3, "max_pictures": 2, "width": 8, "mixer_depth": 1},
        serve={"val_interval": 4, "max_iterations": 4},
    ),
    "crossmatch_3d": BundleCase(
        name="crossmatch_3d",
        dimension=3,
        tiny={"num_workers": 0, "batch_size": 1, "labeled_batch_size": 1, "unlabeled_batch_size": 1,
              "max_iterations": 4, "iterations": 4, "pretrain_iterations": 2, "val_interval": 2, "epoch_length": 2,
              "log_interval": 1, "max_pictures": 1, "cache_rate": 0.0},
        labelled=2,
        val_split=0.5,
    ),
    "localcontrast_2d": BundleCase(
        name="localcontrast_2d",
        dimension=2,  # a 2D network (metadata spatial_shape 192 x 192) that segments whole volumes slice by slice
        ext=".nii.gz",
        tiny={"num_workers": 0, "batch_size": 2, "supervised_iterations": 4, "round_iterations": 2, "rounds": 1,
              "val_interval": 2, "log_interval": 1, "max_pictures": 1},
        # one epoch (= val_interval iterations): the supervised step, the pseudo-labels, then the joint step
        serve={"val_interval": 4, "supervised_iterations": 2, "round_iterations": 2, "rounds": 1},
        labelled=2,
        val_split=0.5,
    ),
}


# ---- helpers -----------------------------------------------------------------------------------------------
def _tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"<no {path}>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _server_env(venv: Path, tmp: Path) -> dict[str, str]:
    """The environment of the MONAI Label launcher: its venv first on PATH, nothing of the project venv.

    Bytecode writing is on: the venv is installed without it (``--no-compile``), so the first server start caches
    what it imports and the next starts read it back (32-34 s a start before, with PYTHONDONTWRITEBYTECODE set).
    """
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        MONAILABEL_PYEXE=str(venv / "bin" / "python"),  # the launcher runs `python` from PATH otherwise
        MONAI_LABEL_SESSION_PATH=str(tmp / "sessions"),
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _merged_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in config.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _merged_keys(v, prefix + k + "#")
    return keys


def _known(overrides: dict[str, object], config: dict) -> dict[str, object]:
    keys = _merged_keys(config)
    return {k: v for k, v in overrides.items() if k in keys}


@dataclass
class Served:
    """A running MONAI Label server for one bundle copy."""

    case: BundleCase
    url: str
    bundle: Path
    studies: Path
    log: Path
    infer_image: str
    infer_shape: tuple[int, ...]
    applied: dict[str, object]


@contextlib.contextmanager
def _server(venv: Path, app: Path, studies: Path, models: str, log: Path, tmp: Path) -> Iterator[str]:
    """Start ``monailabel start_server`` in its own process group, wait for /info/, and always stop it."""
    port = _free_port()
    cmd = [str(venv / "bin" / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", models, "--conf", "zoo_source", "github", "--conf", "sam2", "false",
           "--conf", "preload", "false", "--host", HOST, "--port", str(port)]
    url = f"http://{HOST}:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, env=_server_env(venv, tmp), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"MONAI Label exited with {proc.returncode} during start-up:\n{_tail(log)}")
            with contextlib.suppress(OSError):
                status, _, _ = _request(url + "/info/", timeout=5)
                if status == 200:
                    break
            if time.monotonic() - t0 > STARTUP_TIMEOUT:
                pytest.fail(f"MONAI Label did not answer /info/ within {STARTUP_TIMEOUT} s:\n{_tail(log)}")
            time.sleep(2)
        TIMINGS[f"server start ({models})"] = time.monotonic() - t0
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monailabel_venv() -> Path:
    """The MONAI Label venv from ``scripts/setup_monailabel.sh`` (created on first use, reused afterwards)."""
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    TIMINGS["setup_monailabel.sh"] = time.monotonic() - t0
    if proc.returncode == REGISTRY_UNREACHABLE:
        pytest.skip("scripts/setup_monailabel.sh: pip cannot reach the package registries to create the MONAI Label "
                    "venv:\n" + proc.stderr[-2000:])
    assert proc.returncode == 0, f"setup_monailabel.sh failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    venv = Path(proc.stdout.strip().splitlines()[-1])
    assert (venv / "bin" / "monailabel").is_file(), proc.stdout + proc.stderr
    return venv


@pytest.fixture(scope="module")
def app_template(monailabel_venv: Path, tmp_path_factory) -> Path:
    """The ``monaibundle`` sample app, copied from the MONAI Label wheel by ``monailabel apps --download``."""
    out = tmp_path_factory.mktemp("ml_apps")
    proc = subprocess.run([str(monailabel_venv / "bin" / "monailabel"), "apps", "--download", "--name", "monaibundle",
                           "--output", str(out)], cwd=out, env=_server_env(monailabel_venv, out),
                          capture_output=True, text=True, timeout=300)
    app = out / "monaibundle"
    assert proc.returncode == 0 and (app / "main.py").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return app


def _train_weights(case: BundleCase, bundle: Path) -> dict[str, object]:
    """Tiny demo training in the bundle copy (project environment); returns the overrides applied."""
    merged = ConfigParser.load_config_files([bundle / "configs" / "train.yaml", bundle / "configs" / "demo.yaml"])
    tiny = _known(case.tiny, merged)
    overrides = [a for k, v in tiny.items() for a in (f"--{k}", str(v))]
    t0 = time.monotonic()
    proc = run_bundle(bundle, ["configs/train.yaml", "configs/demo.yaml"], *overrides, timeout=TRAIN_WEIGHTS_TIMEOUT)
    TIMINGS[f"tiny weights ({case.name})"] = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():  # a bundle whose run does not copy its final weights: take the newest checkpoint
        found = sorted((bundle / "runs").rglob("model.pt"), key=lambda p: p.stat().st_mtime)
        assert found, f"no model.pt written by the demo run of {case.name}"
        weights.parent.mkdir(exist_ok=True)
        shutil.copyfile(found[-1], weights)

    # the served train.yaml: train + demo merged, the same tiny overrides, plus one-epoch settings
    parser = ConfigParser(merged)
    for k, v in {**tiny, **_known(case.serve, merged)}.items():
        parser[k] = v
    ConfigParser.export_config_file(parser.get(), bundle / "configs" / "train.yaml", fmt="yaml", sort_keys=False)
    return {**tiny, **_known(case.serve, merged)}


def _phantom_pairs(bundle: Path, ext: str) -> list[dict[str, Path]]:
    """Labelled phantom (image, label) pairs the demo run generated under ``<bundle>/data``."""
    for datalist in sorted((bundle / "data").rglob("datalist.json")):
        content = json.loads(datalist.read_text())
        pairs = [{"image": datalist.parent / i["image"], "label": datalist.parent / i["label"]}
                 for split in ("labeled", "validation", "test") for i in content.get(split, []) if "label" in i]
        if pairs and str(pairs[0]["image"]).endswith(ext):
            return pairs
    return []


def _write_studies(case: BundleCase, bundle: Path, studies: Path) -> tuple[str, tuple[int, ...]]:
    """Studies for one bundle; returns the id and array shape of the image used for inference."""
    (studies / "labels" / "final").mkdir(parents=True)
    ext = case.suffix
    pairs = _phantom_pairs(bundle, ext)
    assert len(pairs) > case.labelled, f"the demo run of {case.name} left too few labelled phantoms in {bundle / 'data'}"
    for n, pair in enumerate(pairs[: case.labelled]):
        shutil.copyfile(pair["image"], studies / f"train_{n:03d}{ext}")
        shutil.copyfile(pair["label"], studies / "labels" / "final" / f"train_{n:03d}{ext}")
    source = pairs[case.labelled]["image"]
    if ext == ".png":  # a non-square crop: the label must come back at the image's own size
        image = np.asarray(Image.open(source))
        crop = image[8: 8 + min(200, image.shape[0] - 8), : min(240, image.shape[1])]
        Image.fromarray(crop).save(studies / "query.png")
        return "query", crop.shape[:2]
    shutil.copyfile(source, studies / f"query{ext}")
    return "query", tuple(nib.load(str(source)).shape)


@pytest.fixture(scope="module", params=list(CASES))
def served(request, monailabel_venv: Path, app_template: Path, tmp_path_factory) -> Iterator[Served]:
    """One bundle copy with tiny weights, served by its own MONAI Label server (stopped afterwards)."""
    case = CASES[request.param]
    missing = [c for c in REQUIRED_CONFIGS if not (BUNDLES / case.name / "configs" / c).is_file()]
    if missing:
        pytest.skip(f"{case.name} has no configs/{', configs/'.join(missing)} yet")
    tmp = tmp_path_factory.mktemp(f"ml_{case.name}")
    app = tmp / "apps" / "monaibundle"
    shutil.copytree(app_template, app)
    bundle = app / "model" / case.name
    shutil.copytree(BUNDLES / case.name, bundle, ignore=COPY_IGNORE)
    applied = _train_weights(case, bundle)
    infer_image, infer_shape = _write_studies(case, bundle, tmp / "studies")
    log = tmp / "server.log"
    with _server(monailabel_venv, app, tmp / "studies", case.name, log, tmp) as url:
        yield Served(case, url, bundle, tmp / "studies", log, infer_image, infer_shape, applied)
    print(f"\n[monailabel] timings (s): {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


# ---- tests -------------------------------------------------------------------------------------------------
def _labels(bundle: Path) -> dict[str, int]:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    pred = next(iter(meta["network_data_format"]["outputs"].values()))
    return {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}


def test_info_lists_the_model(served: Served):
    status, _, body = _request(served.url + "/info/")
    assert status == 200, body[:2000]
    info = json.loads(body)
    model = info["models"].get(served.case.name)
    assert model is not None, f"/info/ models: {list(info['models'])}\n{_tail(served.log)}"
    assert model["dimension"] == served.case.dimension
    assert model["labels"] == _labels(served.bundle)
    assert model["type"] == "segmentation"
    assert served.case.name in info["trainers"], f"no trainer for {served.case.name}:\n{_tail(served.log)}"


def test_infer_returns_a_label_of_the_input_size(served: Served, tmp_path: Path):
    query = urllib.parse.urlencode({"image": served.infer_image, "output": "image"})
    body = urllib.parse.urlencode({"params": json.dumps({"device": "cpu"})}).encode()
    t0 = time.monotonic()
    status, _, content = _request(f"{served.url}/infer/{served.case.name}?{query}", data=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"},
                                  timeout=INFER_TIMEOUT)
    TIMINGS[f"infer ({served.case.name})"] = time.monotonic() - t0
    assert status == 200, content[:2000].decode(errors="replace") + "\n" + _tail(served.log)
    if served.case.suffix == ".png":
        label = np.asarray(Image.open(io.BytesIO(content)))
    else:
        out = tmp_path / "label.nii.gz"
        out.write_bytes(content)
        label = np.asanyarray(nib.load(str(out)).dataobj)
    assert label.shape == served.infer_shape, (label.shape, served.infer_shape)
    valid = {0, *_labels(served.bundle).values()}
    values = set(np.unique(label).tolist())
    assert values <= valid, f"label values {sorted(values)} outside {sorted(valid)}"
    print(f"\n[monailabel] {served.case.name}: label {label.shape} {label.dtype} values {sorted(values)}")


def test_train_one_epoch_finishes(served: Served):
    before = time.time()
    request = {"device": "cpu", "max_epochs": 1, "val_split": served.case.val_split, "multi_gpu": False,
               "pretrained": True}
    t0 = time.monotonic()
    status, _, content = _request(f"{served.url}/train/{served.case.name}?run_sync=true",
                                  data=json.dumps(request).encode(), headers={"Content-Type": "application/json"},
                                  timeout=TRAIN_TIMEOUT)
    TIMINGS[f"train ({served.case.name})"] = time.monotonic() - t0
    assert status == 200, content[:2000].decode(errors="replace") + "\n" + _tail(served.log)
    log = _tail(served.log, 200_000)
    assert "Training Finished" in log, _tail(served.log)
    assert "Add Checkpoint Loader" in log, "the trainer did not start from models/model.pt"
    written = [p for p in served.bundle.rglob("*.pt") if p.stat().st_mtime >= before - 1]
    assert written, "the one-epoch training wrote no checkpoint"
    print(f"\n[monailabel] {served.case.name}: /train/ -> {content.decode()[:200]}; wrote "
          f"{sorted(str(p.relative_to(served.bundle)) for p in written)}; overrides {served.applied}")
