# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""scripts/benchmark.py: a record per measurement, the Markdown table, the profile, clear errors."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(_spec)
sys.modules["benchmark"] = benchmark
_spec.loader.exec_module(benchmark)


def test_measure_and_table():
    rec = benchmark.measure("infer2d", "demo", "fp32", device="cpu", threads=1, warmup=0, repeats=2)
    assert rec["unit"] == "s/image" and len(rec["times_s"]) == 2
    assert rec["min_s"] <= rec["median_s"] and rec["median_s"] > 0 and rec["peak_memory_mb"] > 0
    assert rec["shape"] == {"batch": 1, "size": 128}
    text = benchmark.to_markdown([rec], {"machine": "test cpu", "threads": 1, "date": "2026-12-01"})
    assert "Measured on test cpu with 1 threads" in text
    assert f"| 2D inference per image | demo | batch 1, size 128 | fp32 | {rec['median_s']:.2f} s/image |" in text


def test_profile_writes_the_operator_table(tmp_path):
    path = benchmark.profile("infer2d", "demo", "fp32", device="cpu", threads=1, steps=1, top=5, output=str(tmp_path))
    text = (tmp_path / "profile_infer2d_demo_fp32.txt").read_text()
    assert path.endswith("profile_infer2d_demo_fp32.txt") and "Self CPU" in text and "conv" in text.lower()


@pytest.mark.parametrize(("args", "message"), [(("nope",), "unknown workflow"), (("switch", "huge"), "setting must be"),
                                               (("switch", "demo", "fp8"), "precision must be")])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        benchmark.measure(*args)


def test_run_writes_json_and_markdown_and_keeps_earlier_measurements(tmp_path):
    import json

    kw = {"settings": "demo", "warmup": 0, "repeats": 1, "threads": 1, "device": "cpu", "output": str(tmp_path)}
    benchmark.run(workflows="infer2d", precisions="fp32", **kw)
    benchmark.run(workflows="infer2d", precisions="amp,fp32", **kw)  # fp32 again: replaced, not duplicated
    records = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["workflow"], r["precision"]) for r in records] == [("infer2d", "amp"), ("infer2d", "fp32")]
    assert (tmp_path / "results.md").read_text().count("| 2D inference per image | demo |") == 2
    # measurements of another machine are not mixed into this machine's table
    data = json.loads((tmp_path / "results.json").read_text())
    data["meta"]["machine"] = "another cpu"
    (tmp_path / "results.json").write_text(json.dumps(data))
    benchmark.run(workflows="infer2d", precisions="fp32", **kw)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["machine"] == benchmark._machine()
    assert [(r["workflow"], r["precision"]) for r in data["results"]] == [("infer2d", "fp32")]
