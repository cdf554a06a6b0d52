# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Guards that stop a run before work, or keep it from going silently wrong (scripts.common)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_bundle

import_bundle("switch_us")
from scripts.common import errors  # noqa: E402
from scripts.common.datalist import MIN_SIDE, check_datalist, check_image_content  # noqa: E402
from scripts.common.errors import ConfigValueError, DataError  # noqa: E402
from scripts.common.images2d import check_datalist as bundle_check_datalist  # noqa: E402
from scripts.common.intensity import ScaleToUnitd, scale_to_unit  # noqa: E402
from scripts.common.overrides import check_size  # noqa: E402
from scripts.common.run_folder import check_writable, resolve_run_dir  # noqa: E402


@pytest.mark.parametrize(("size", "multiple", "fine"), [(256, 16, True), ([48, 48, 32], 16, True), (100, 16, False),
                                                       (30, 16, False), ([48, 48, 30], 16, False), (8, 16, False)])
def test_sizes_the_network_cannot_take_are_refused_with_the_multiple(size, multiple, fine):
    if fine:
        check_size("image_size", size, multiple)
        return
    with pytest.raises(ConfigValueError, match=rf"multiples of {multiple}") as info:
        check_size("image_size", size, multiple)
    assert f"image_size = {size!r}" in str(info.value) and getattr(ConfigValueError, "brief_report", False)


def test_size_message_proposes_the_nearest_sizes():
    with pytest.raises(ConfigValueError, match="for example 96 or 112"):
        check_size("image_size", 100, 16)


def test_a_read_only_output_folder_is_refused_before_work(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o555)
    if os.access(models, os.W_OK):  # root writes anywhere: let the check see what another user's run would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == models else real_access(p, mode))
    try:
        with pytest.raises(ConfigValueError, match="is not writable"):
            check_writable([tmp_path / "runs", models])
        with pytest.raises(ConfigValueError, match="cannot be created"):
            check_writable([models / "sub"])
    finally:
        models.chmod(0o755)


def test_writable_check_accepts_new_and_existing_folders_and_refuses_a_file(tmp_path):
    check_writable([tmp_path / "new" / "deeper", tmp_path])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigValueError, match="cannot be created"):
        check_writable([tmp_path / "file" / "runs"])


def test_ctrl_c_prints_one_line_with_the_checkpoint_and_how_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(errors.TRACEBACK_ENV, raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    errors._RUN_FOLDER.clear()
    assert errors.interrupted_summary() == "stopped (Ctrl-C)."
    folder = resolve_run_dir(str(tmp_path), "run")
    assert errors.install_error_summary(["/venv/lib/python3.11/site-packages/monai/bundle/__main__.py", "run"])
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"stopped (Ctrl-C): the run's checkpoint is in {os.path.join(folder, 'models')}; the same command "
                   "resumes it (a finished evaluation or inference run is simply rerun)."]


def test_images_are_scaled_from_the_range_they_show():
    u8 = torch.tensor([[0.0, 51.0], [255.0, 128.0]])
    assert torch.equal(scale_to_unit(u8), u8 / 255.0)
    u16 = torch.tensor([[0.0, 1000.0], [65535.0, 4095.0]])  # a 16-bit PNG: no longer clipped to white
    out = scale_to_unit(u16)
    assert torch.allclose(out, u16 / 65535.0) and float(out.max()) == 1.0 and float(out.median()) < 0.1
    unit = torch.tensor([[0.0, 0.25], [1.0, 0.5]])
    assert torch.equal(scale_to_unit(unit), unit)
    hu = torch.linspace(-1000.0, 3000.0, 9999).reshape(1, 101, 99)
    scaled = scale_to_unit(hu)
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0 and 0.4 < float(scaled.mean()) < 0.6
    d = ScaleToUnitd("image")({"image": u16[None], "label": torch.ones(1, 2, 2)})
    assert torch.allclose(d["image"][0], u16 / 65535.0) and torch.equal(d["label"], torch.ones(1, 2, 2))


def test_degenerate_images_are_refused_by_file_name():
    with pytest.raises(DataError, match=r"one constant intensity \(128 everywhere\).*grey\.png"):
        check_image_content(np.full((64, 64), 128, np.uint8), "grey.png", "labeled image", (64, 64))
    with pytest.raises(DataError, match=r"one constant intensity \(0 everywhere\).*black\.png"):
        check_image_content(np.zeros((64, 64)), "black.png", "test image", (64, 64))
    with pytest.raises(DataError, match=rf"4 x 64 pixels/voxels, smaller than {MIN_SIDE}.*tiny\.png"):
        check_image_content(np.arange(256).reshape(4, 64), "tiny.png", "labeled image", (4, 64))
    check_image_content(np.arange(4096).reshape(64, 64), "fine.png", "labeled image", (64, 64))


def test_a_declared_class_that_no_label_holds_is_named(tmp_path, caplog):
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"i{i}.png")
        label = np.zeros((32, 32), np.uint8)
        label[4:12, 4:12] = 1
        Image.fromarray(label).save(tmp_path / f"l{i}.png")
        items.append({"image": f"i{i}.png", "label": f"l{i}.png"})
    import json

    (tmp_path / "datalist.json").write_text(json.dumps({"labeled": items[:1], "validation": items[1:2],
                                                        "test": items[2:]}))
    with caplog.at_level(logging.WARNING):
        bundle_check_datalist(str(tmp_path / "datalist.json"), num_classes=3, class_names=["background", "lesion", "cyst"])
    assert "no label of" in caplog.text and "class 2 (cyst)" in caplog.text and "1 (lesion)" not in caplog.text
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        check_datalist(str(tmp_path / "datalist.json"), lambda item, split, n, dims: [0, 1, 2], num_classes=3)
    assert "no label of" not in caplog.text  # every declared class present
