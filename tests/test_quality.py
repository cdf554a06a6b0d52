# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""scripts/quality.py: the fixed-budget protocol (same budget per method, table, resume) and a tiny real run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO, import_bundle

_spec = importlib.util.spec_from_file_location("quality", REPO / "scripts" / "quality.py")
quality = importlib.util.module_from_spec(_spec)
sys.modules["quality"] = quality
_spec.loader.exec_module(quality)


def test_every_method_gets_the_same_budget():
    proto = quality.PROTOCOLS["us2d"]
    sw = quality.method_overrides(proto, "switch", 0.5)
    sup = quality.method_overrides(proto, "supervised", 0.5)
    assert (int(sw["pretrain_iterations"]), int(sw["selftrain_iterations"])) == (500, 200)
    assert (int(sup["pretrain_iterations"]), int(sup["selftrain_iterations"])) == (0, 700)  # one stage, same total
    assert sw["image_size"] == sup["image_size"] == "128"
    assert quality.method_overrides(quality.PROTOCOLS["acdc"], "supervised")["max_iterations"] == "2000"
    with pytest.raises(quality.QualityError, match="positive"):
        quality.method_overrides(proto, "switch", 0)


def test_table_columns_and_gain():
    rows = [
        {"dataset": "acdc", "method": "supervised",
         "metrics": {"dice": 0.5, "dice_mm": 9.0, "jaccard": 0.4, "hd95": 12.0, "hd95_pooled": 1.0,
                     "dice_rv": 0.45, "dice_lv": 0.55, "hd95_rv": 3.0}},
        {"dataset": "acdc", "method": "crossmatch",
         "metrics": {"dice": 0.5625, "iou": 0.45, "hd95": 8.0, "dice_rv": 0.5, "dice_lv": 0.625,
                     "hd95_rv": math.nan}},
    ]
    assert quality.table_columns([r["metrics"] for r in rows]) == ["dice", "dice_rv", "dice_lv", "iou", "hd95"]
    text = quality.markdown_table(rows).splitlines()
    assert text[0].startswith("| dataset | method | dice | dice_rv |") and text[0].endswith("| Dice gain |")
    assert text[2] == "| acdc | supervised | 0.5000 | 0.4500 | 0.5500 | 0.4000 | 12.00 |  |"  # an older run's jaccard
    assert text[3] == "| acdc | crossmatch | 0.5625 | 0.5000 | 0.6250 | 0.4500 | 8.00 | +6.2 |"


def _finished(run_dir, dice):
    (run_dir / "evaluation").mkdir(parents=True)
    summary = {"metrics": {"dice": {"mean": dice, "std": 0.1, "count": 3}, "iou": {"mean": None, "std": None, "count": 0}}}
    (run_dir / "evaluation" / "metrics_summary.json").write_text(json.dumps(summary))
    (run_dir / "FINISHED").touch()


def _per_image(run_dir, dice_by_id, item="image"):
    """A per-item metrics file as the bundles' ``SegmentationReport`` writes it (switch_us: images, crossmatch_3d:
    volumes)."""
    (run_dir / "evaluation").mkdir(parents=True, exist_ok=True)
    lines = ["id,dice,iou"] + [f"{k},{'nan' if v is None else v},0" for k, v in dice_by_id.items()]
    (run_dir / "evaluation" / f"metrics_per_{item}.csv").write_text("\n".join(lines) + "\n")


def test_per_item_dice_of_images_and_volumes(tmp_path):
    _per_image(tmp_path / "switch", {"img1": 0.5, "img2": None})
    _per_image(tmp_path / "crossmatch", {"case1": 0.75}, item="volume")
    switch = quality.read_per_item_dice(tmp_path / "switch")
    assert switch["img1"] == 0.5 and math.isnan(switch["img2"]) and len(switch) == 2
    assert quality.read_per_item_dice(tmp_path / "crossmatch") == {"case1": 0.75}
    assert quality.read_per_item_dice(tmp_path / "none") == {}


def test_paired_gain_pairs_images_scored_by_both_runs(tmp_path):
    sup, semi = tmp_path / "supervised", tmp_path / "switch"
    # img4 has no lesion: supervised predicted nothing there (NaN under empty_policy skip), switch a false positive
    _per_image(sup, {"img1": 0.5, "img2": 0.25, "img3": 0.75, "img4": None})
    _per_image(semi, {"img1": 0.625, "img2": 0.5, "img3": 0.75, "img4": 0.0})
    gain = quality.paired_gain(semi, sup)
    diffs = [0.125, 0.25, 0.0]  # img4 is left out of the pairs
    sd = math.sqrt(sum((d - 0.125) ** 2 for d in diffs) / 2)
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(0.125) and gain["se"] == pytest.approx(sd / math.sqrt(3))
    assert quality.paired_gain(semi, tmp_path / "missing") is None

    rows = [{"dataset": "busi", "method": m, "metrics": {"dice": d}, "run_dir": str(p), "output": "amp"}
            for m, d, p in [("supervised", 0.5, sup), ("switch", 0.4688, semi)]]
    # the same dataset from another protocol run must not be compared with this one's supervised row
    rows += [{"dataset": "busi", "method": "supervised", "metrics": {"dice": 0.25}, "output": "fp32"},
             {"dataset": "busi", "method": "switch", "metrics": {"dice": 0.5}, "output": "fp32"}]
    quality.add_paired_gains(rows)
    assert "paired_gain" in rows[1] and "paired_gain" not in rows[3]  # the fp32 rows have no run folders
    text = quality.markdown_table(rows).splitlines()
    assert text[0].endswith("| Dice gain | paired gain ± SE (n) |")
    assert text[3] == f"| busi | switch | 0.4688 | -3.1 | +12.5 ± {100 * sd / math.sqrt(3):.1f} (3) |"
    assert text[5] == "| busi | switch | 0.5000 | +25.0 | |"


def test_compare_two_outputs_method_by_method(tmp_path):
    outputs = {}
    for name, dice in [("amp", {"a": 0.5, "b": 0.75}), ("fp32", {"a": 0.25, "b": 0.75})]:
        out = tmp_path / name
        _per_image(out / "bundle" / "runs" / "switch", dice)
        out.joinpath("quality.json").write_text(json.dumps({"rows": [
            {"dataset": "d", "method": "switch", "metrics": {"dice": sum(dice.values()) / 2},
             "run_dir": str(out / "bundle" / "runs" / "switch")},
            {"dataset": "d", "method": name, "metrics": {"dice": 0.1}}]}))
        outputs[name] = str(out)
    lines = quality.compare(outputs["amp"], outputs["fp32"]).splitlines()
    assert len(lines) == 3  # only the method both outputs hold
    assert lines[2] == "| switch | 0.6250 | 0.5000 | +12.5 | +12.5 ± 12.5 (2) |"  # diffs 0.25 and 0: sd 0.177
    with pytest.raises(quality.QualityError, match="does not exist"):
        quality.compare(outputs["amp"], str(tmp_path / "none"))
    # every method of one output against one method of the other (an ablation against the baseline)
    lines = quality.compare(outputs["amp"], outputs["fp32"], method="switch").splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| switch", "| amp"]
    assert lines[2] == "| switch | 0.6250 | 0.5000 | +12.5 | +12.5 ± 12.5 (2) |"
    assert lines[3].startswith("| amp | 0.1000 | 0.5000 | -40.0 |")  # no run folder: no paired column
    with pytest.raises(quality.QualityError, match="has no 'bcp' row"):
        quality.compare(outputs["amp"], outputs["fp32"], method="bcp")


def test_seeds_spread_over_runs(tmp_path):
    outputs = []
    for i, (sup, semi) in enumerate([(0.5, 0.625), (0.75, 0.75), (0.25, 0.5)]):
        out = tmp_path / f"seed{i}"
        out.mkdir()
        out.joinpath("quality.json").write_text(json.dumps({"rows": [
            {"dataset": "d", "method": "supervised", "metrics": {"dice": sup}},
            {"dataset": "d", "method": "switch", "metrics": {"dice": semi}},
            {"dataset": "d", "method": f"only_in_{i}", "metrics": {"dice": 0.1}}]}))
        outputs.append(str(out))
    lines = quality.seeds(*outputs, save=str(tmp_path / "seeds.md")).splitlines()
    assert len(lines) == 4  # the methods every output holds
    # supervised 0.5, 0.75, 0.25: mean 0.5, SD 0.25; gains +12.5, 0, +25: mean 12.5, SD 12.5, SE 12.5 / sqrt(3)
    assert lines[2] == "| supervised | 0.5000, 0.7500, 0.2500 | 0.5000 | 25.0 |  |  |"
    assert lines[3] == f"| switch | 0.6250, 0.7500, 0.5000 | 0.6250 | 12.5 | +12.5, +0.0, +25.0 | +12.5 ± {12.5 / math.sqrt(3):.1f} |"
    assert (tmp_path / "seeds.md").read_text().splitlines() == lines
    with pytest.raises(quality.QualityError, match="is a folder; give the file"):
        quality.seeds(*outputs, save=str(tmp_path))
    with pytest.raises(quality.QualityError, match="at least two"):
        quality.seeds(outputs[0])
    with pytest.raises(quality.QualityError, match="does not exist"):
        quality.seeds(outputs[0], str(tmp_path / "none"))


def test_seeds_against_pairs_runs_seed_by_seed(tmp_path):
    def output(name, sup, semi):
        out = tmp_path / name
        out.mkdir()
        out.joinpath("quality.json").write_text(json.dumps({"rows": [
            {"dataset": "d", "method": "supervised", "metrics": {"dice": sup}},
            {"dataset": "d", "method": "switch", "metrics": {"dice": semi}}]}))
        return str(out)

    amp = [output("amp1", 0.5, 0.625), output("amp2", 0.75, 0.5)]
    fp32 = [output("fp1", 0.25, 0.75), output("fp2", 0.75, 0.625)]
    # python-fire hands `--against a,b` over as text or as a tuple: both pair the same way
    for against in (",".join(fp32), tuple(fp32)):
        lines = quality.seeds(*amp, against=against).splitlines()
        assert lines[4] == ""
        # supervised: +25, 0 -> mean 12.5, SD 17.68, SE 12.5; switch: -12.5, -12.5 -> SE 0
        assert lines[7] == "| supervised | 0.2500, 0.7500 | +25.0, +0.0 | +12.5 ± 12.5 | 0 of 2 |"
        assert lines[8] == "| switch | 0.7500, 0.6250 | -12.5, -12.5 | -12.5 ± 0.0 | 2 of 2 |"
    with pytest.raises(quality.QualityError, match="one output per seed"):
        quality.seeds(*amp, against=fp32[0])


def test_seeds_take_the_supervised_run_of_another_output(tmp_path, caplog):
    """A re-run of one method (other --overrides) is compared with each seed's supervised-only run elsewhere."""
    def output(name, rows, overrides=None):
        out = tmp_path / name
        out.mkdir()
        out.joinpath("quality.json").write_text(json.dumps({"overrides": overrides or {}, "rows": [
            {"dataset": "d", "method": m, "metrics": {"dice": d}} for m, d in rows]}))
        return str(out)

    base = [output("s1", [("supervised", 0.5), ("switch", 0.25)]), output("s2", [("supervised", 0.75), ("switch", 0.5)])]
    kbs = [output("k1", [("switch", 0.625)], {"keep_best_stage": "True"}),
           output("k2", [("switch", 0.75)], {"keep_best_stage": "True"})]
    with caplog.at_level("WARNING", logger=quality.logger.name):
        lines = quality.seeds(*kbs, supervised=",".join(base)).splitlines()
    assert "different --overrides" not in caplog.text  # the baselines only lend their supervised-only rows
    assert lines[2] == "| supervised | 0.5000, 0.7500 | 0.6250 | 17.7 |  |  |"
    assert lines[3] == "| switch | 0.6250, 0.7500 | 0.6875 | 8.8 | +12.5, +0.0 | +6.2 ± 6.2 |"
    assert "| switch | 0.2500, 0.5000 | +37.5, +25.0 |" in quality.seeds(*kbs, supervised=base, against=base)
    with pytest.raises(quality.QualityError, match="one output per seed"):
        quality.seeds(*kbs, supervised=base[0])
    with pytest.raises(quality.QualityError, match="has no supervised-only row"):
        quality.seeds(*kbs, supervised=kbs)


def test_finished_methods_are_read_back_not_retrained(tmp_path, monkeypatch):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "datalist.json").write_text("{}")
    out = tmp_path / "out"
    for method, dice in [("supervised", 0.6), ("bcp", 0.65), ("switch", 0.7)]:
        _finished(out / "bundle" / "runs" / method, dice)

    def _no_training(*args, **kwargs):
        raise AssertionError("a finished method was trained again")

    monkeypatch.setattr(quality, "_run_method", _no_training)
    result = quality.run("us2d", str(data), str(out), name="ddti")
    assert [r["method"] for r in result["rows"]] == ["supervised", "bcp", "switch"]
    assert result["rows"][2]["metrics"]["dice"] == 0.7 and math.isnan(result["rows"][2]["metrics"]["iou"])
    assert "| ddti | switch | 0.7000 |" in (out / "quality.md").read_text()
    assert (out / "bundle" / "configs" / "train.yaml").exists()  # the protocol runs in its own bundle copy
    assert "+10.0" in quality.table(str(out))
    # python-fire hands `--name "DDTI, fp32"` over as a tuple: the table shows the text
    assert quality.run("us2d", str(data), str(out), name=("ddti", "fp32"))["rows"][0]["dataset"] == "ddti, fp32"


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(quality.QualityError, match="unknown protocol"):
        quality.run("nope", str(tmp_path), str(tmp_path / "o"))
    with pytest.raises(quality.QualityError, match="no datalist.json"):
        quality.run("us2d", str(tmp_path), str(tmp_path / "o"))
    (tmp_path / "datalist.json").write_text("{}")
    with pytest.raises(quality.QualityError, match="unknown method"):
        quality.run("us2d", str(tmp_path), str(tmp_path / "o"), methods="switch,crossmatch")
    for seed in ("abc", -1, "2.5"):
        with pytest.raises(quality.QualityError, match="--seed must be a non-negative integer"):
            quality.run("us2d", str(tmp_path), str(tmp_path / "o"), seed=seed)
    assert not (tmp_path / "o").exists()  # nothing is written before every argument is checked
    (tmp_path / "a_file").write_text("kept")
    with pytest.raises(quality.QualityError, match="is a file, not a folder"):
        quality.run("us2d", str(tmp_path), str(tmp_path / "a_file"))
    assert (tmp_path / "a_file").read_text() == "kept"
    with pytest.raises(quality.QualityError, match="quality.json"):
        quality.table(str(tmp_path / "missing"))
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "quality.py"), "run", "us2d", str(tmp_path / "x"),
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no datalist.json" in proc.stderr and "Traceback" not in proc.stderr
    # "--amp maybe" was a true string: the run started in AMP; "--iterations abc" ended in a TypeError
    for flag, value, message in (("--amp", "maybe", "--amp must be bool, got 'maybe'"),
                                 ("--iterations", "abc", "--iterations must be float, got 'abc'")):
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "quality.py"), "run", "us2d", str(tmp_path),
                               str(tmp_path / "o"), flag, value], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_la_protocol_warns_on_full_resolution_data(tmp_path, caplog):
    full = {"spacing": [0.625] * 3, "labeled": [{"image": "a.nii.gz"}]}
    down = {"spacing": None, "labeled": [{"image": "a.nii.gz", "spacing": [1.243, 1.25, 1.25]}]}
    for name, content in (("full", full), ("down", down)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "datalist.json").write_text(json.dumps(content))
    with caplog.at_level("WARNING", logger=quality.logger.name):
        quality._warn_if_finer(tmp_path / "full" / "datalist.json", quality.PROTOCOLS["la"].min_spacing_mm, "la")
        assert "0.625 mm voxels" in caplog.text and "--downsample" in caplog.text
        caplog.clear()
        quality._warn_if_finer(tmp_path / "down" / "datalist.json", quality.PROTOCOLS["la"].min_spacing_mm, "la")
        assert caplog.text == ""


@pytest.mark.slow
def test_tiny_protocol_runs_end_to_end(tmp_path):
    """The real commands: two methods with a tiny budget on phantoms; the table holds both and their Dice."""
    import_bundle("switch_us")
    from scripts.common.phantom_us import generate_phantom_dataset

    data = generate_phantom_dataset(tmp_path / "phantoms", num_labeled=4, num_unlabeled=8, num_validation=2,
                                    num_test=3, size=64)
    data = data.parent if data.name == "datalist.json" else data
    out = tmp_path / "q"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "quality.py"), "run", "us2d", str(data), str(out),
                           "--methods", "supervised,switch", "--iterations", "0.004"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "quality.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["supervised", "switch"]
    assert all(0.0 <= r["metrics"]["dice"] <= 1.0 for r in result["rows"])
    sup = json.loads((out / "bundle" / "runs" / "supervised" / "evaluation" / "metrics_summary.json").read_text())
    assert sup["num_images"] == 3
    assert "pretrain_iterations 4" in result["rows"][1]["command"]
    assert "selftrain_iterations 6" in result["rows"][0]["command"]  # supervised: the whole budget in one stage
    # the finished runs are read back under their own settings only (another label is fine)
    base = [sys.executable, str(REPO / "scripts" / "quality.py"), "run", "us2d", str(data), str(out),
            "--methods", "supervised,switch"]
    again = subprocess.run([*base, "--iterations", "0.004", "--name", "phantoms"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "finished earlier" in again.stderr, again.stderr[-3000:]
    reread = json.loads((out / "quality.json").read_text())["rows"]
    assert reread[0]["dataset"] == "phantoms"
    assert [r["seconds"] for r in reread] == [r["seconds"] for r in result["rows"]]  # the training times are kept
    other = subprocess.run([*base, "--iterations", "0.008"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "with other settings (selftrain_iterations '6' -> '11')" in other.stderr
    assert "Traceback" not in other.stderr


def test_method_runs_keep_the_callers_pythonpath(tmp_path, monkeypatch):
    """The bundle goes first on the run's PYTHONPATH; packages the caller put on PYTHONPATH stay importable."""
    seen = {}

    def fake_run(cmd, cwd, env, stdout, stderr):
        seen.update(cwd=cwd, path=env["PYTHONPATH"].split(os.pathsep))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(quality.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTHONPATH", "/opt/site-a")
    quality._run_method(tmp_path, ["configs/train.yaml"], {"seed": "1"}, tmp_path / "run.log")
    assert seen == {"cwd": tmp_path, "path": [str(tmp_path), "/opt/site-a"]}
    monkeypatch.delenv("PYTHONPATH")
    quality._run_method(tmp_path, ["configs/train.yaml"], {"seed": "1"}, tmp_path / "run.log")
    assert seen["path"] == [str(tmp_path)]


def test_an_output_folder_serves_one_bundle(tmp_path, monkeypatch):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "datalist.json").write_text("{}")
    out = tmp_path / "out"
    _finished(out / "bundle" / "runs" / "supervised", 0.6)
    monkeypatch.setattr(quality, "_run_method", lambda *a, **k: None)
    quality.run("us2d", str(data), str(out), methods="supervised")  # copies switch_us into out/bundle
    with pytest.raises(quality.QualityError, match="runs of another bundle.*Switch.*CrossMatch"):
        quality.run("la", str(data), str(out))


def test_seeds_and_compare_refuse_outputs_of_different_protocols(tmp_path, caplog):
    def output(name, protocol, scale=1.0, data="/d"):
        out = tmp_path / name
        out.mkdir()
        out.joinpath("quality.json").write_text(json.dumps({
            "protocol": protocol, "iterations_scale": scale, "dataset_dir": data,
            "rows": [{"dataset": "d", "method": "supervised", "metrics": {"dice": 0.5}}]}))
        return str(out)

    us, la, twice, other = output("us", "us2d"), output("la", "la"), output("x2", "us2d", 2.0), output("o", "us2d", data="/e")
    with pytest.raises(quality.QualityError, match="different protocols"):
        quality.seeds(us, la)
    with pytest.raises(quality.QualityError, match="different protocols"):
        quality.compare(us, la)
    with pytest.raises(quality.QualityError, match=r"different budgets \(--iterations\)"):
        quality.seeds(us, us, against=f"{twice},{us}")
    with caplog.at_level("WARNING", logger=quality.logger.name):
        assert "| supervised | 0.5000, 0.5000 |" in quality.seeds(us, other)
    assert "different dataset folders (/d, /e)" in caplog.text


def test_saved_tables_create_their_folder(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    out.joinpath("quality.json").write_text(json.dumps({"rows": [
        {"dataset": "d", "method": "supervised", "metrics": {"dice": 0.5}}]}))
    quality.table(str(out), save=str(tmp_path / "new" / "dir" / "t.md"))
    assert "| d | supervised | 0.5000 |" in (tmp_path / "new" / "dir" / "t.md").read_text()


def test_extra_overrides_reach_every_method_and_are_recorded(tmp_path, monkeypatch, caplog):
    proto = quality.PROTOCOLS["us2d"]
    assert quality.extra_overrides(proto, None) == {}
    assert quality.extra_overrides(proto, "keep_best_stage=True, fds_beta=0.02") == {
        "keep_best_stage": "True", "fds_beta": "0.02"}
    # python-fire reads `--overrides "{keep_best_stage: True, roi: [1, 2]}"` as a dict with Python values
    assert quality.extra_overrides(proto, {"--keep_best_stage": True, "roi": [1, 2]}) == {
        "keep_best_stage": "True", "roi": "[1, 2]"}
    for bad, message in (("keep_best_stage", "is not key=value"), ("=1", "is not key=value"),
                         ("seed=3", "use --seed"), ("amp=False", "use --amp"), (7, "must be key=value"),
                         ("pretrain_iterations=10", "same budget")):
        with pytest.raises(quality.QualityError, match=message):
            quality.extra_overrides(proto, bad)

    data = tmp_path / "prepared"
    data.mkdir()
    (data / "datalist.json").write_text("{}")
    calls = []

    def fake_method(bundle, configs, overrides, log_file):
        calls.append(dict(overrides))
        _finished(bundle / "runs" / overrides["run_name"], 0.5)

    monkeypatch.setattr(quality, "_run_method", fake_method)
    out = tmp_path / "out"
    result = quality.run("us2d", str(data), str(out), methods="supervised,switch", overrides="keep_best_stage=True")
    assert [c["keep_best_stage"] for c in calls] == ["True", "True"]
    assert calls[0]["selftrain_iterations"] == "1400" and calls[0]["run_name"] == "supervised"
    assert result["overrides"] == {"keep_best_stage": "True"}
    assert "--keep_best_stage True" in result["rows"][1]["command"]
    # a finished run is not reported under other overrides
    with pytest.raises(quality.QualityError, match="keep_best_stage 'True' -> None"):
        quality.run("us2d", str(data), str(out), methods="switch")
    assert len(calls) == 2
    plain = tmp_path / "plain"
    quality.run("us2d", str(data), str(plain), methods="switch")
    with caplog.at_level("WARNING", logger=quality.logger.name):
        quality.compare(str(out), str(plain))
    assert "different --overrides" in caplog.text and "keep_best_stage" in caplog.text
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "quality.py"), "run", "us2d", str(data),
                           str(tmp_path / "o"), "--overrides", "seed=4"], capture_output=True, text=True)
    assert proc.returncode == 2 and "use --seed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def _resolved_schedule(proto, method: str, overrides: dict) -> tuple[int, int]:
    """``(step-1 iterations, joint rounds)`` of a method's bundle run: its configs with its command-line overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(quality.REPO / "bundles" / proto.bundle / c)
                        for c in (*proto.configs, *proto.methods[method])])
    for key, value in overrides.items():
        parser[key] = _literal(value)
    return int(parser.get_parsed_content("step1_iterations")), int(parser.get_parsed_content("joint_rounds"))


def _literal(value: str):
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def test_acdc_lc_protocol_gives_every_method_the_same_budget():
    """The local contrastive protocol: supervised-only gets the supervised step plus every round (the baseline
    overlay's supervised_only), CrossMatch runs from its own bundle with the same number of iterations, and
    --iterations scales all three."""
    proto = quality.PROTOCOLS["acdc_lc"]
    assert proto.all_methods() == ["supervised", "localcontrast", "crossmatch"]
    lc = quality.method_overrides(proto, "localcontrast")
    sup = quality.method_overrides(proto, "supervised")
    cm = quality.method_overrides(proto, "crossmatch")
    total = int(lc["supervised_iterations"]) + int(lc["rounds"]) * int(lc["round_iterations"])
    sup_steps, sup_rounds = _resolved_schedule(proto, "supervised", sup)
    assert sup_steps == total == int(cm["max_iterations"]) == 2000
    assert sup_rounds == 0 and "fit" not in cm and cm["image_size"] == lc["image_size"] == "96"
    assert _resolved_schedule(proto, "localcontrast", lc) == (1000, 2)
    half = quality.method_overrides(proto, "supervised", 0.5)
    assert _resolved_schedule(proto, "supervised", half)[0] == 1000 and quality.method_overrides(proto, "crossmatch", 0.5)[
        "max_iterations"] == "1000"
