# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The switch_us bundle's files and metadata.

``verify_metadata``, ``verify_net_in_out``, ``ckpt_export`` and the ONNX export run through
``scripts/verify_bundle.py`` for both bundles in ``test_packaging.py``.
"""

from __future__ import annotations

import json

from conftest import BUNDLES


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
