# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""scripts/benchmark.py: a record per measurement, the Markdown table, the profile, clear errors."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import pytest
from conftest import BUNDLES, REPO

_spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(_spec)
sys.modules["benchmark"] = benchmark
_spec.loader.exec_module(benchmark)


def test_measure_and_table():
    # keep_freed_memory=False: the allocator setting is process-wide, the test process keeps glibc's default
    rec = benchmark.measure("infer2d", "demo", "fp32", device="cpu", threads=1, warmup=0, repeats=2,
                            keep_freed_memory=False)
    assert rec["unit"] == "s/image" and len(rec["times_s"]) == 2 and rec["keep_freed_memory"] is False
    assert rec["min_s"] <= rec["median_s"] and rec["median_s"] > 0 and rec["peak_memory_mb"] > 0
    assert isinstance(rec["page_faults_per_step"], int) and rec["page_faults_per_step"] >= 0
    assert rec["shape"] == {"batch": 1, "size": 128}
    text = benchmark.to_markdown([rec], {"machine": "test cpu", "threads": 1, "date": "2026-12-01"})
    assert "Measured on test cpu with 1 threads" in text
    # a measurement without the bundles' allocator setting is marked as such
    assert rec["channels_last"] is True  # switch_us's inference.yaml: channels_last true
    assert f"| 2D inference per image | demo | batch 1, size 128 | fp32, channels-last | {benchmark.format_seconds(rec['median_s'])} s/image * |" in text
    assert "default allocator behaviour" in text
    text = benchmark.to_markdown([{**rec, "keep_freed_memory": True}], {"machine": "m", "threads": 1, "date": "d"})
    assert f"| fp32, channels-last | {benchmark.format_seconds(rec['median_s'])} s/image |" in text and "allocator" not in text
    # GPU steps take milliseconds: two significant digits below 0.1 s; GPU memory is labelled as such
    assert [benchmark.format_seconds(v) for v in (2.284, 0.1, 0.0767, 0.0047)] == ["2.28", "0.10", "0.077", "0.0047"]
    gpu = {**rec, "device": "cuda:0", "median_s": 0.0034, "peak_memory_mb": 41.0, "keep_freed_memory": True}
    assert "| fp32, channels-last | 0.0034 s/image | 0.04 GB (GPU) |" in benchmark.to_markdown([gpu], {"machine": "m", "threads": 1, "date": "d"})


def test_switch_workflows_measure_the_bundles_memory_format():
    # switch_us trains in channels-last in fp32 too (its configs say true); the figures used to be contiguous
    assert benchmark._bundle_channels_last("switch_us") is True
    assert benchmark._bundle_channels_last("switch_us", "inference.yaml") is True
    assert benchmark._bundle_channels_last("crossmatch_3d") == "auto"
    rec = benchmark.measure("supervised", "demo", "fp32", device="cpu", threads=1, warmup=0, repeats=1,
                            keep_freed_memory=False)
    assert rec["channels_last"] is True and rec["amp_dtype"] == "None"
    text = benchmark.to_markdown([rec], {"machine": "m", "threads": 1, "date": "d"})
    assert "| batch 4, size 128 | fp32, channels-last |" in text


def test_machine_names_an_isa_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert "capped" not in benchmark._machine()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "oneDNN capped at AVX2" in benchmark._machine()  # a table measured so is not taken for this CPU's


def test_layout_times_both_memory_formats_alternately(capsys):
    rec = benchmark.layout("crossmatch_acdc", "demo", "fp32", device="cpu", threads=1, rounds=2,
                           keep_freed_memory=False)
    assert rec["contiguous_s"] > 0 and rec["channels_last_s"] > 0
    assert rec["speedup"] == pytest.approx(rec["contiguous_s"] / rec["channels_last_s"])
    assert '"speedup"' in capsys.readouterr().out
    # each built variant really runs in the layout it names
    for forced in (False, True):
        _, info, _, _ = benchmark._build("crossmatch_acdc", "demo", "fp32", "cpu", 1, False, layout=forced)
        assert info["channels_last"] is forced
    with pytest.raises(benchmark.BenchmarkError, match="no memory-format setting"):
        benchmark.layout("ldm_sample", "demo")
    with pytest.raises(benchmark.BenchmarkError, match="--rounds must be at least 1"):
        benchmark.layout("crossmatch_acdc", "demo", rounds=0)


@pytest.mark.parametrize(("workflow", "unit"), [("mgcc", "s/iteration"), ("ldm_autoencoder", "s/iteration"),
                                              ("ldm_diffusion", "s/iteration"), ("ldm_sample", "s/image"),
                                              ("localcontrast", "s/iteration")])
def test_mgcc_localcontrast_and_generation_steps_are_measured(workflow, unit):
    rec = benchmark.measure(workflow, "demo", "fp32", device="cpu", threads=1, warmup=0, repeats=1,
                            keep_freed_memory=False)
    assert rec["unit"] == unit and rec["median_s"] > 0 and rec["peak_memory_mb"] > 0
    assert rec["shape"] == benchmark.SETTINGS[workflow]["demo"]


def test_profile_writes_the_operator_table(tmp_path):
    path = benchmark.profile("infer2d", "demo", "fp32", device="cpu", threads=1, steps=1, top=5, output=str(tmp_path),
                             keep_freed_memory=False)
    text = (tmp_path / "profile_infer2d_demo_fp32.txt").read_text()
    assert path.endswith("profile_infer2d_demo_fp32.txt") and "Self CPU" in text and "conv" in text.lower()


@pytest.mark.parametrize(("args", "message"), [(("nope",), "unknown workflow 'nope'; choose from switch, bcp"),
                                               (("switch", "huge"), "unknown setting 'huge'; choose from published, demo"),
                                               (("switch", "demo", "fp8"), "unknown precision 'fp8'; choose from amp, fp32")])
def test_bad_arguments(args, message):
    with pytest.raises(benchmark.BenchmarkError, match=message):
        benchmark.measure(*args)


@pytest.mark.parametrize(("call", "message"), [
    (lambda out: benchmark.measure("infer2d", "demo", "fp32", threads=0), "--threads must be at least 1, got 0"),
    (lambda out: benchmark.measure("infer2d", "demo", "fp32", repeats=0), "--repeats must be at least 1, got 0"),
    (lambda out: benchmark.measure("infer2d", "demo", "fp32", warmup=-1), "--warmup must be at least 0, got -1"),
    (lambda out: benchmark.profile("infer2d", "demo", "fp32", steps=0, output=out), "--steps must be at least 1"),
    (lambda out: benchmark.run(workflows="infer2d", timeout=0, output=out), "--timeout must be at least 1, got 0"),
])
def test_counts_are_checked_before_measuring(call, message, tmp_path):
    with pytest.raises(benchmark.BenchmarkError, match=message):
        call(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_run_checks_every_name_before_measuring_anything(tmp_path):
    with pytest.raises(benchmark.BenchmarkError, match="unknown workflow 'nope', 'swich'"):
        benchmark.run(workflows="infer2d,nope,swich", output=str(tmp_path / "out"))
    with pytest.raises(benchmark.BenchmarkError, match="unknown precision 'fp8'"):
        benchmark.run(workflows="infer2d", precisions="amp,fp8", output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_arguments_in_one_line_with_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "run", "--workflows", "nope",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unknown workflow 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
    # python-fire passes "abc" on as a string: refused by the type hint, before any measurement starts
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "run", "--threads", "abc",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--threads must be int, got 'abc'" in proc.stderr, proc.stderr[-2000:]
    assert "measuring" not in proc.stderr and not list(tmp_path.iterdir())


def test_failed_measurements_fail_the_run_and_write_nothing(tmp_path):
    # an unknown device fails inside each measurement's subprocess
    with pytest.raises(benchmark.BenchmarkError, match="2 of 2 measurements failed"):
        benchmark.run(workflows="infer2d", settings="demo", precisions="amp,fp32", device="nodevice", threads=1,
                      output=str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def test_run_writes_json_and_markdown_and_keeps_earlier_measurements(tmp_path):
    import json

    # an earlier run of this machine: one measurement to keep, one (infer2d fp32) that this run measures again
    kept = {"workflow": "infer2d", "description": benchmark.WORKFLOWS["infer2d"][1], "setting": "demo",
            "shape": {"image_size": 128}, "precision": "amp", "device": "cpu", "threads": 1, "median_s": 0.5,
            "min_s": 0.5, "times_s": [0.5], "peak_memory_mb": 10.0, "unit": "s/image"}
    stale = {**kept, "precision": "fp32", "median_s": 1e6}
    meta = {"machine": benchmark._machine(), "threads": 1, "date": "2000-01-01"}
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "results": [stale, kept]}))
    benchmark.run(workflows="infer2d", precisions="fp32", settings="demo", warmup=0, repeats=1, threads=1,
                  device="cpu", output=str(tmp_path))
    records = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["workflow"], r["precision"]) for r in records] == [("infer2d", "amp"), ("infer2d", "fp32")]
    assert records[0] == kept and 0 < records[1]["median_s"] < 1e6  # measured again: replaced, not duplicated
    assert (tmp_path / "results.md").read_text().count("| 2D inference per image | demo |") == 2


def test_measurements_of_another_machine_are_neither_mixed_in_nor_overwritten(tmp_path):
    import json

    path = tmp_path / "results.json"
    assert benchmark._earlier_records(path, "this cpu") == []
    text = json.dumps({"meta": {"machine": "another cpu"}, "results": [{"workflow": "infer2d"}]})
    path.write_text(text)
    assert benchmark._earlier_records(path, "another cpu") == [{"workflow": "infer2d"}]
    with pytest.raises(benchmark.BenchmarkError, match=r"another machine \(another cpu\).*--output.*--replace True"):
        benchmark._earlier_records(path, "this cpu")
    assert benchmark._earlier_records(path, "this cpu", replace=True) == []
    # run stops before measuring, and the other machine's table is left as it was
    with pytest.raises(benchmark.BenchmarkError, match="another machine"):
        benchmark.run(workflows="infer2d", output=str(tmp_path))
    assert path.read_text() == text
    path.write_text("not json")
    with pytest.raises(benchmark.BenchmarkError, match="not a results table"):
        benchmark._earlier_records(path, "this cpu")


def test_an_output_that_is_a_file_is_refused_before_any_measurement(tmp_path):
    a_file = tmp_path / "prof"
    a_file.write_text("kept")
    # profile used to measure for minutes, then fail with a raw FileExistsError on the folder
    for argv in (["profile", "switch", "--output", str(a_file)], ["run", "--workflows", "infer2d", "--output", str(a_file)]):
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *argv], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr
        assert "measuring" not in proc.stderr and "EMA teacher" not in proc.stderr
    assert a_file.read_text() == "kept"


_FAULTS = """
import resource, sys
import torch
sys.path.insert(0, sys.argv[1])
from scripts.common.runtime import keep_freed_memory

def faults():  # minor page faults of three 64 MiB tensors, each filled and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.ones(2**24)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

assert keep_freed_memory(False) is False
plain = min(faults() for _ in range(3))
assert keep_freed_memory() is True
print(plain, min(faults() for _ in range(8)))  # the heap settles within a few rounds
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
@pytest.mark.parametrize("bundle", ["switch_us", "crossmatch_3d"])
def test_keep_freed_memory_reuses_freed_pages(bundle):
    # in a subprocess: the setting is process-wide
    out = subprocess.run([sys.executable, "-c", _FAULTS, str(BUNDLES / bundle)], capture_output=True, text=True,
                         check=True).stdout.split()
    plain, kept = int(out[0]), int(out[1])
    assert plain > 0.9 * 3 * 2**14  # glibc's default: every 64 MiB block is mapped and faulted in afresh (4 KiB pages)
    assert kept < 0.05 * plain
