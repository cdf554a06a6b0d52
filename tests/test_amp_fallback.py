# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""``amp: true`` on a CPU without native bf16: both bundles run fp32 and say so once."""

from __future__ import annotations

import importlib
import logging

import pytest
import torch
from conftest import import_bundle


@pytest.mark.parametrize("bundle", ["crossmatch_3d", "switch_us"])
def test_amp_without_native_bf16_runs_fp32_and_says_so_once(bundle, monkeypatch, caplog, restore_scripts):
    import_bundle(bundle)
    utils = importlib.import_module("scripts.common.runtime")
    monkeypatch.setitem(utils.resolve_amp_dtype.__globals__, "cpu_supports_bf16", lambda: False)
    utils._warn_amp_unavailable.cache_clear()
    with caplog.at_level(logging.WARNING, logger=utils.logger.name):
        dtypes = [utils.resolve_amp_dtype("cpu", amp=True) for _ in range(3)]
        assert utils.resolve_amp_dtype("cpu", amp=True, dtype="bfloat16") is torch.bfloat16  # explicit: honoured
        assert utils.resolve_amp_dtype("cpu", amp=False) is None
    assert dtypes == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if "running in fp32" in r.getMessage()]
    assert len(warnings) == 1 and "AVX512-BF16" in warnings[0]
    monkeypatch.setitem(utils.resolve_amp_dtype.__globals__, "cpu_supports_bf16", lambda: True)
    assert utils.resolve_amp_dtype("cpu", amp=True) is torch.bfloat16
