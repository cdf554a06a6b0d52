# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""End-to-end runs of the localcontrast_2d bundle through ``python -m monai.bundle run``, from a copy of the bundle
alone in an empty folder: the model card's demo (supervised step, pseudo-labels, two joint rounds, 3D evaluation),
run once and shared by the module; evaluation and inference with the published model; and tiny runs for the resume
and the supervised baseline."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES, import_bundle, kill_mid_run, run_bundle
from nibabel.processing import resample_from_to

pytestmark = pytest.mark.slow

DEMO = ["configs/train.yaml", "configs/demo.yaml"]
DEMO_SUPERVISED, DEMO_ROUNDS = 300, 2  # configs/demo.yaml
TINY = ("--supervised_iterations", "4", "--round_iterations", "4", "--rounds", "2", "--val_interval", "2",
        "--batch_size", "2", "--log_interval", "1", "--max_pictures", "1", "--publish_model", "False")
TRAIN_ONLY = ("--run", "['$@train#trainer.run()']")  # no test evaluation: the resume compares weights
CLASSES = {0, 1, 2, 3}


def _copy_bundle(dst_root: Path) -> Path:
    dst = dst_root / "localcontrast_2d"
    shutil.copytree(BUNDLES / "localcontrast_2d", dst,
                    ignore=shutil.ignore_patterns("runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _dice(run: Path) -> float:
    return json.loads((run / "evaluation" / "metrics_summary.json").read_text())["metrics"]["dice"]["mean"]


def _stem(path: Path | str) -> str:
    return Path(path).name[: -len(".nii.gz")]


def _array(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the foregrounds (any class) of two label maps."""
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """The model card's demo (train.yaml + demo.yaml) run once in a bundle copy: the copy and the run's output."""
    b = _copy_bundle(tmp_path_factory.mktemp("clean_room_localcontrast"))
    return b, _ok(run_bundle(b, DEMO, timeout=1200))


def _datalist(b: Path) -> dict:
    return json.loads((b / "data" / "phantom_acdc" / "datalist.json").read_text())


def test_demo_finishes_and_reaches_the_target(demo):
    b, _ = demo
    run = b / "runs" / "demo"
    assert (run / "FINISHED").exists()
    summary = json.loads((run / "evaluation" / "metrics_summary.json").read_text())
    assert summary["num_volumes"] == len(_datalist(b)["test"]) == 4
    assert set(summary["classes"].values()) == {"right_ventricle", "myocardium", "left_ventricle"}
    assert _dice(run) >= 0.70, summary["metrics"]["dice"]
    for f in ("models/model.pt", "models/model_final.pt", "models/checkpoint.pt", "evaluation/metrics_per_volume.csv"):
        assert (run / f).is_file(), f
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    # the published model carries its settings: evaluation, inference and serving read them
    record = torch.load(b / "models" / "model.pt", map_location="cpu", weights_only=False)
    settings = record["settings"]
    assert settings["bundle"] == "localcontrast_2d" and settings["num_classes"] == 4, settings
    assert settings["image_size"] == 64 and list(settings["pixdim"]) == [3.0, 3.0], settings
    assert json.loads((b / "models" / "model.json").read_text())["run_dir"].endswith("demo")


def test_the_log_shows_the_supervised_step_then_the_joint_rounds(demo):
    _, out = demo
    lines = re.findall(r"train \[(supervised|joint)\] iteration (\d+)/(\d+).*", out)
    assert lines, out[-3000:]
    total = DEMO_SUPERVISED + DEMO_ROUNDS * 100
    assert {int(t) for _, _, t in lines} == {total}
    supervised = [int(i) for stage, i, _ in lines if stage == "supervised"]
    joint = [int(i) for stage, i, _ in lines if stage == "joint"]
    assert supervised and joint and max(supervised) <= DEMO_SUPERVISED < min(joint) and max(joint) == total
    for line in re.findall(r"train \[(?:supervised|joint)\] iteration .*", out):  # the contrastive term: joint only
        assert ("loss_loc" in line) == ("[joint]" in line), line
    for k in range(1, DEMO_ROUNDS + 1):
        assert re.search(rf"joint round {k}: [1-9]\d* pseudo-labelled slices hold every class", out), out[-3000:]


def test_pseudo_labels_of_every_round_overlay_their_volumes(demo, restore_scripts):
    b, _ = demo
    run = b / "runs" / "demo"
    unlabeled = _datalist(b)["unlabeled"]
    import_bundle("localcontrast_2d")
    cardiac_phantom = importlib.import_module("scripts.common.phantom_3d").cardiac_phantom
    assert sorted(p.name for p in (run / "pseudo_labels").iterdir()) == [f"round_{k}" for k in range(1, DEMO_ROUNDS + 1)]
    for k in range(1, DEMO_ROUNDS + 1):
        folder = run / "pseudo_labels" / f"round_{k}"
        files = sorted(folder.glob("*.nii.gz"))
        assert [_stem(p) for p in files] == sorted(_stem(it["image"]) for it in unlabeled)  # one per unlabelled volume
        manifest = json.loads((folder / "pseudo_labels.json").read_text())
        assert manifest["round"] == k and len(manifest["pseudo_labeled"]) == len(unlabeled) == 10
        assert sorted((b / it["label"]).resolve() for it in manifest["pseudo_labeled"]) == [p.resolve() for p in files]
        overlaps = []
        for item in unlabeled:
            label = nib.load(str(folder / f"{_stem(item['image'])}.nii.gz"))
            image = nib.load(str(b / "data" / "phantom_acdc" / item["image"]))
            assert label.get_data_dtype() == np.uint8
            values = np.asanyarray(label.dataobj)
            assert set(np.unique(values).tolist()) <= CLASSES
            # written on the network's grid (3 mm, 64 x 64, every slice) with that grid's affine ...
            assert values.shape == (64, 64, image.shape[2]), values.shape
            assert np.allclose(label.header.get_zooms(), (3.0, 3.0, 8.0))
            # ... which places it on its source volume in world space: resampled onto the image's own grid it
            # covers the phantom's true structures (a wrong affine would shift or scale it off them)
            native = np.asanyarray(resample_from_to(label, image, order=0).dataobj)
            truth = cardiac_phantom(int(item["case"].rsplit("_", 1)[1]))[1]  # the phantom's seed is its index
            assert native.shape == truth.shape
            overlaps.append(_overlap(native, truth))
        assert float(np.mean(overlaps)) >= 0.7, (k, overlaps)  # about 0.87 (0.03 with the native grid's affine)


def test_evaluate_with_the_published_model_reproduces_the_test_dice(demo):
    b, _ = demo
    _ok(run_bundle(b, ["configs/train.yaml", "configs/evaluate.yaml"], "--run_name", "card_evaluate",
                   "--num_workers", "0"))
    assert _dice(b / "runs" / "card_evaluate") == pytest.approx(_dice(b / "runs" / "demo"), abs=1e-6)


def test_inference_writes_each_label_on_its_input_grid(demo):
    b, _ = demo
    items = _datalist(b)["test"][:2]
    images = [b / "data" / "phantom_acdc" / it["image"] for it in items]
    _ok(run_bundle(b, ["configs/inference.yaml"], "--input", json.dumps([str(p) for p in images]),
                   "--save_probabilities", "True"))
    out = b / "predictions" / "inference"
    assert (out / "FINISHED").exists()
    for item, image in zip(items, images, strict=True):
        source = nib.load(str(image))
        seg = nib.load(str(out / f"{_stem(image)}_seg.nii.gz"))
        assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
        values = np.asanyarray(seg.dataobj)
        assert set(np.unique(values).tolist()) <= CLASSES
        assert _overlap(values, _array(b / "data" / "phantom_acdc" / item["label"])) >= 0.7
        prob = nib.load(str(out / f"{_stem(image)}_prob.nii.gz"))  # the foreground classes' probabilities
        assert prob.shape[:3] == source.shape and np.allclose(prob.affine, source.affine)


def _round_files(run: Path, k: int) -> dict[str, int]:
    folder = run / "pseudo_labels" / f"round_{k}"
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_a_run_killed_in_the_joint_step_resumes_to_the_same_weights(tmp_path):
    """SIGKILL inside the joint rounds, then the same command: the weights of an uninterrupted run, and the round's
    pseudo-labels are read back, not predicted again."""
    b = _copy_bundle(tmp_path)
    _ok(run_bundle(b, DEMO, *TINY, *TRAIN_ONLY, "--run_name", "straight"))
    killed = b / "runs" / "killed"
    # checkpoints every 2 iterations; rounds start after iterations 4 and 8, the run ends at 12
    at = kill_mid_run(b, DEMO, [*TINY, *TRAIN_ONLY, "--run_name", "killed"], killed / "models" / "checkpoint.pt", 6, 12)
    k = 1 if at < 8 else 2
    written = _round_files(killed, k)
    assert len(written) == 11, written  # 10 labels and the manifest, written before the checkpoint
    out = _ok(run_bundle(b, DEMO, *TINY, *TRAIN_ONLY, "--run_name", "killed"))
    assert f"iteration {at}." in out and "resumed from" in out, out[-3000:]
    assert f"resuming joint round {k}: pseudo-labels read back" in out, out[-3000:]
    assert f"pseudo-labels of 10 volumes (round {k})" not in out
    assert _round_files(killed, k) == written  # not rewritten
    straight = b / "runs" / "straight"
    for r in (1, 2):
        for p in sorted((straight / "pseudo_labels" / f"round_{r}").glob("*.nii.gz")):
            assert np.array_equal(_array(p), _array(killed / "pseudo_labels" / f"round_{r}" / p.name)), (r, p.name)
    a = torch.load(straight / "models" / "model_final.pt", map_location="cpu", weights_only=False)["model"]
    c = torch.load(killed / "models" / "model_final.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == c.keys()
    for key, t in a.items():
        assert torch.allclose(t.float(), c[key].float(), atol=1e-6), key


def test_supervised_baseline_writes_no_pseudo_labels(tmp_path):
    """The baseline overlay trains step 1 alone for the whole budget: 2 + 2 rounds x 1 iterations here."""
    b = _copy_bundle(tmp_path)
    out = _ok(run_bundle(b, [*DEMO, "configs/baseline_supervised.yaml"], "--supervised_iterations", "2",
                         "--round_iterations", "1", "--val_interval", "2", "--batch_size", "2", "--log_interval", "1",
                         "--max_pictures", "1", "--publish_model", "False"))
    run = b / "runs" / "supervised"
    assert (run / "FINISHED").exists() and (run / "models" / "model.pt").is_file()
    assert not (run / "pseudo_labels").exists()
    assert "train [supervised] iteration 4/4" in out and "[joint]" not in out and "loss_loc" not in out, out[-3000:]
    assert not (b / "models").exists()  # a trial run (--publish_model False) publishes nothing
