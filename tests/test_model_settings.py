# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""A model remembers how it was trained (scripts.common.checkpoints): recorded settings, their check, publishing."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import import_bundle

import_bundle("switch_us")
from scripts.common.checkpoints import (  # noqa: E402
    WeightsLoader,
    bundle_version,
    check_settings,
    model_record,
    publish_model,
    read_settings,
    schedule_overrides,
)
from scripts.common.errors import SettingsMismatchError  # noqa: E402
from scripts.networks import UNet2D  # noqa: E402

SETTINGS = {"bundle": "switch_us", "image_size": 128, "num_classes": 2, "class_names": ["background", "lesion"]}


def _weights(path, settings=SETTINGS, seed=0):
    torch.manual_seed(seed)
    net = UNet2D(1, 2)
    torch.save(model_record(net, settings), path)
    return net


def test_settings_travel_with_the_weights_and_the_weights_still_load(tmp_path):
    path = tmp_path / "model.pt"
    net = _weights(path, {**SETTINGS, "roi_size": (48, 48, 32), "scale": torch.tensor(0.5)})
    settings = read_settings(path)
    assert settings["image_size"] == 128 and settings["roi_size"] == [48, 48, 32] and settings["scale"] == 0.5
    fresh = UNet2D(1, 2)
    WeightsLoader(path, fresh)()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))
    assert read_settings(tmp_path / "absent.pt") == {}
    torch.save({"model": net.state_dict()}, tmp_path / "old.pt")  # weights written before settings were recorded
    assert read_settings(tmp_path / "old.pt") == {}
    assert bundle_version(tmp_path) == "unknown"


def test_a_contradicting_setting_is_refused_with_both_values(tmp_path):
    path = tmp_path / "model.pt"
    _weights(path)
    trained = read_settings(path)
    assert check_settings(trained, {"image_size": 128, "num_classes": 2.0, "class_names": ("background", "lesion"),
                                 "not_recorded": 7})["image_size"] == 128
    with pytest.raises(SettingsMismatchError, match="image_size: the model was trained with 128, this run sets 256"):
        check_settings(trained, {"image_size": 256}, ckpt_path=path)
    assert getattr(SettingsMismatchError, "brief_report", False)
    assert check_settings(trained, {"image_size": 256}, allow_mismatch=True)["image_size"] == 128
    assert check_settings(read_settings(tmp_path / "absent.pt"), {"image_size": 256}) == {}


def test_publishing_keeps_the_previous_model_and_names_the_run(tmp_path):
    models = tmp_path / "models"
    first, second = tmp_path / "runs" / "good" / "model.pt", tmp_path / "runs" / "trial" / "model.pt"
    first.parent.mkdir(parents=True)
    second.parent.mkdir(parents=True)
    _weights(first, seed=1)
    _weights(second, {**SETTINGS, "image_size": 64}, seed=2)
    assert publish_model(first, models, first.parent) == models / "model.pt"
    assert json.loads((models / "model.json").read_text())["run_dir"].endswith("good")
    good_bytes = (models / "model.pt").read_bytes()
    assert publish_model(second, models, second.parent, publish=False) is None
    assert (models / "model.pt").read_bytes() == good_bytes and not (models / "previous").exists()
    publish_model(second, models, second.parent)
    info = json.loads((models / "model.json").read_text())
    assert info["run_dir"].endswith("trial") and info["settings"]["image_size"] == 64
    kept = list((models / "previous").glob("model_*_good.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == good_bytes
    assert read_settings(models / "model.pt")["image_size"] == 64
    assert json.loads((models / "model_metadata.json").read_text())["trained_settings"]["image_size"] == 64


def test_the_torchscript_export_carries_the_settings(tmp_path):
    """The model card's export command: ckpt_export with models/model_metadata.json embeds the settings."""
    import shutil
    import subprocess
    import sys

    from conftest import BUNDLES

    bundle = tmp_path / "switch_us"
    shutil.copytree(BUNDLES / "switch_us" / "configs", bundle / "configs")
    shutil.copytree(BUNDLES / "switch_us" / "scripts", bundle / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    run = tmp_path / "runs" / "demo" / "model.pt"
    run.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(model_record(UNet2D(1, 2, projector=True), SETTINGS), run)
    publish_model(run, bundle / "models", run.parent)
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
                           "models/model.ts", "--ckpt_file", "models/model.pt", "--meta_file",
                           "models/model_metadata.json", "--config_file", "configs/inference.yaml", "--key_in_ckpt",
                           "model"], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    extra = {"metadata.json": ""}
    torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["trained_settings"]["image_size"] == 128 and meta["name"]


def test_a_trial_run_does_not_replace_the_bundle_model_unless_asked(tmp_path):
    cli = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"
    assert schedule_overrides([cli, "run", "--config_file", "x", "--max_iterations", "4", "--lr=0.1"]) == ["--max_iterations"]
    assert schedule_overrides([cli, "run", "--pretrain-iterations=4", "--selftrain_iterations", "2"]) == [
        "--pretrain_iterations", "--selftrain_iterations"]
    assert schedule_overrides(["pytest", "--max_iterations", "4"]) == []  # not a monai.bundle command line
    # localcontrast_2d's schedule: the supervised step, the joint rounds and their length
    assert schedule_overrides([cli, "run", "--supervised_iterations", "4", "--round_iterations=2", "--rounds", "1"]) == [
        "--supervised_iterations", "--round_iterations", "--rounds"]
    run = tmp_path / "runs" / "trial" / "model.pt"
    run.parent.mkdir(parents=True)
    _weights(run)
    models = tmp_path / "models"
    trial = [cli, "run", "--max_iterations", "4"]
    assert publish_model(run, models, run.parent, argv=trial) is None and not models.exists()
    assert publish_model(run, models, run.parent, publish=True, argv=trial) == models / "model.pt"
    assert publish_model(run, models, run.parent, argv=[cli, "run", "--run_name", "full"]) == models / "model.pt"
    assert publish_model(run, models, run.parent, publish=False, argv=[cli, "run"]) is None

