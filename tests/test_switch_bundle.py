# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The switch_us bundle against the MONAI bundle tools: metadata schema, network in/out, TorchScript export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from conftest import BUNDLES, REPO, import_bundle

import_bundle("switch_us")
from scripts.networks import UNet2D  # noqa: E402

SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"


def _bundle_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "switch_us"
    shutil.copytree(BUNDLES / "switch_us", dst, ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _monai_bundle(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_required_files():
    b = BUNDLES / "switch_us"
    for f in ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml", "configs/logging.conf",
              "configs/demo.yaml", "configs/evaluate.yaml", "configs/multi_gpu_train.yaml", "configs/baseline_bcp.yaml",
              "configs/baseline_supervised.yaml", "docs/README.md", "docs/data_license.txt"):
        assert (b / f).is_file(), f
    meta = json.loads((b / "configs/metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    for v in [meta["monai_version"], meta["pytorch_version"], meta["numpy_version"], *meta["required_packages_version"].values()]:
        assert "+" not in v and v.count(".") >= 1  # exact, pip-installable pins


def test_verify_metadata_net_in_out_and_torchscript_export(tmp_path):
    b = _bundle_copy(tmp_path)
    _monai_bundle(b, "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA), "--hash_val", SCHEMA_MD5)
    _monai_bundle(b, "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                  "configs/inference.yaml", "--device", "cpu")
    torch.manual_seed(0)
    net = UNet2D(projector=True)
    (b / "models").mkdir()
    torch.save({"model": net.state_dict()}, b / "models" / "model.pt")
    _monai_bundle(b, "ckpt_export", "network_def", "--filepath", "models/model.ts", "--ckpt_file", "models/model.pt",
                  "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", "--key_in_ckpt", "model")
    ts = torch.jit.load(str(b / "models" / "model.ts"))
    net.eval()
    ts.eval()
    x = torch.rand(2, 1, 256, 256)
    with torch.no_grad():
        assert torch.allclose(ts(x), net(x), atol=1e-5)
