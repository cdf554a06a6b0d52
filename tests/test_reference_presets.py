# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The reference presets (``configs/reference*.yaml`` of switch_us, crossmatch_3d and localcontrast_2d): every knob
they set has its reference value, each knob behaves as the authors' code does, and each preset runs end to end on the
demo data (localcontrast_2d's is resolved, not run: its dense CRF needs pydensecrf2).

Knobs already covered elsewhere: the transposed 3D CutMix box (``cutmix_faithful_axes``) in
``test_crossmatch_methods.py::test_cutmix_box_faithful_axes_reproduce_reference``; the region weights of the mixed loss
(used by ``pretrain_patch_weight``) in ``test_switch_methods.py::test_masked_dice_ce_hand_computation_and_region_weights``;
the teacher flow without built-in dropout (``teacher_dropout: false``) in
``test_crossmatch_methods.py::test_noisy_rows_keep_builtin_dropout_off``.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BUNDLES, import_bundle, run_bundle, squares
from monai.bundle import ConfigParser
from PIL import Image
from torch import nn

SW_REF = "configs/reference.yaml"


def parse(bundle: str, files: list[str]) -> ConfigParser:
    """The merged configs of ``bundles/<bundle>`` (not instantiated)."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / f) for f in files])
    return parser


def overlay_keys(bundle: str, overlay: str) -> dict:
    return ConfigParser.load_config_file(str(BUNDLES / bundle / overlay))


@pytest.fixture
def sw():
    return import_bundle("switch_us")


@pytest.fixture
def cm():
    return import_bundle("crossmatch_3d")


# ================================================================================ 1. every knob at its reference value

SWITCH_REFERENCE = {
    "teacher_train_mode": True,
    "per_view_forward": True,
    "pretrain_patch_weight": 0.5,
    "amp": False,
    "empty_policy": "zero",
    # unchanged from the defaults, asserted so that a change of a default shows up here
    "augmentation": True,
    "selftrain_lr_scale": 1.0,
    "pretrain_iterations": 10000,
    "selftrain_iterations": 30000,
    "learning_rate": 0.05,
    "batch_size": 8,
    "ema_decay": 0.99,
    "use_fds": True,
    "fds_beta": 0.0175,
    "contrastive_weight": 0.1,
    "consistency_weight": 0.1,
    "keep_best_stage": False,
    "eval_split": "test",
    "seed": 1,
}


def test_switch_reference_overlay_sets_every_knob():
    parser = parse("switch_us", ["configs/train.yaml", SW_REF])
    for key, value in SWITCH_REFERENCE.items():
        assert parser.get_parsed_content(key) == value, key
    assert parser["train#trainer#per_view_forward"] == "@per_view_forward"
    assert parser["train#trainer#pretrain_patch_weight"] == "@pretrain_patch_weight"
    assert parser["teacher#train_mode"] == "@teacher_train_mode"
    assert parser["train#trainer#amp"] == "@amp"
    assert parser.get_parsed_content("run_name") == "reference"
    # the overlay holds only knobs train.yaml has (a misspelt key would silently do nothing)
    base = parse("switch_us", ["configs/train.yaml"])
    for key in overlay_keys("switch_us", SW_REF):
        assert key in base.config, key


@pytest.mark.parametrize("baseline", ["supervised", "bcp"])
def test_switch_reference_baselines_set_every_knob(baseline):
    files = ["configs/train.yaml", f"configs/baseline_{baseline}.yaml", SW_REF, f"configs/reference_{baseline}.yaml"]
    parser = parse("switch_us", files)
    assert parser.get_parsed_content("augmentation") is False  # the authors' baselines train without augmentation
    assert parser.get_parsed_content("amp") is False and parser.get_parsed_content("empty_policy") == "zero"
    assert parser.get_parsed_content("run_name") == f"reference_{baseline}"
    trainer = parser["train#trainer"]
    if baseline == "supervised":
        assert trainer["_target_"].endswith("SupervisedBaselineTrainer") and trainer["dice_on_logits"] is True
        assert parser.get_parsed_content("pretrain_iterations") == 0
        assert parser.get_parsed_content("selftrain_iterations") == 30000
    else:
        assert trainer["_target_"].endswith("BCPTrainer") and trainer["pretrain_patch_weight"] == 1.0
        assert parser.get_parsed_content("train#trainer#per_view_forward") is True
        assert parser.get_parsed_content("teacher_train_mode") is True
    base = parse("switch_us", ["configs/train.yaml", f"configs/baseline_{baseline}.yaml"])
    for key in overlay_keys("switch_us", f"configs/reference_{baseline}.yaml"):
        parent = key.rsplit("#", 1)[0] if "#" in key else None  # a new trainer argument: its trainer exists
        assert (base.get(parent) is not None) if parent else key in base.config, key


CROSSMATCH_SHARED = {
    "strong_weight": 0.5,
    "kd_weight": 1.0,
    "loss_divisor": 3.0,
    "mix_teacher_eval": True,
    "mix_ta_targets": False,
    "teacher_dropout": True,
    "clean_bn_statistics": False,
    "cutmix_faithful_axes": True,
    "amp": False,
    "eta": 0.3,
    "fp_weak": 0.25,
    "fp_strong": 0.75,
    "cutmix_prob": 0.5,
}
CROSSMATCH_LA = {
    "max_iterations": 9000,
    "conf_threshold": 0.85,
    "threshold_schedule": "head",
    "threshold_ramp_iterations": 17000,
    "lr_horizon": 17000,
    "learning_rate": 0.001,
    "weight_decay": 0.0001,
    "batch_size": 2,
    "eval_split": "test",
    "test_protocol": "paper",
    "empty_policy": "paper",
    "seed": 1337,
    "run_name": "reference_la",
}
CROSSMATCH_ACDC = {
    "conf_threshold": 0.95,
    "threshold_schedule": "fixed",
    "image_mode": "nearest",
    "back_mode": "nearest",
    "eval_split": "validation",
    "acdc_epochs": 300,
    "batch_size": 12,
    "learning_rate": 0.01,
    "run_name": "reference_acdc",
}


@pytest.mark.parametrize("kind", ["la", "acdc"])
def test_crossmatch_reference_overlay_sets_every_knob(kind):
    files = ["configs/train.yaml"] + (["configs/acdc.yaml"] if kind == "acdc" else []) + ["configs/reference.yaml"]
    parser = parse("crossmatch_3d", files)
    for key, value in {**CROSSMATCH_SHARED, **(CROSSMATCH_LA if kind == "la" else CROSSMATCH_ACDC)}.items():
        assert parser.get_parsed_content(key) == value, key
    trainer = parser["train#trainer"]
    for key in ("threshold_schedule", "threshold_ramp_iterations", "mix_teacher_eval", "mix_ta_targets", "loss_divisor",
                "teacher_dropout", "clean_bn_statistics", "cutmix_faithful_axes", "strong_weight", "kd_weight"):
        assert trainer[key] == f"@{key}", key
    if kind == "acdc":
        # the poly horizon stays ACDC's 300 epochs (max_iterations needs the data; checked as written)
        assert "@max_iterations" in parser["lr_horizon"] and parser["lr_scheduler"]["lr_lambda"]["total_iterations"] == "@lr_horizon"
        assert parser["optimizer"]["nesterov"] is True
        inferer = parser["validate#inferer#inferer"]
        assert inferer["mode"] == "@image_mode" and inferer["back_mode"] == "@back_mode"
        assert parser["test#inferer"].replace("::", "#") == "@validate#inferer"
        assert parser["train#preprocessing"]["image_mode"] == "@image_mode"
    base = parse("crossmatch_3d", ["configs/train.yaml", "configs/acdc.yaml"])
    for key in overlay_keys("crossmatch_3d", "configs/reference.yaml"):
        assert key in base.config, key


def test_crossmatch_reference_supervised_is_the_baseline_under_the_preset():
    files = ["configs/train.yaml", "configs/baseline.yaml", "configs/reference.yaml", "configs/reference_supervised.yaml"]
    parser = parse("crossmatch_3d", files)
    assert parser["train#trainer"]["_target_"].endswith("SupervisedBaselineTrainer")
    assert parser.get_parsed_content("amp") is False and parser.get_parsed_content("lr_horizon") == 17000
    assert parser.get_parsed_content("run_name") == "reference_supervised_la"
    acdc = parse("crossmatch_3d", files[:1] + ["configs/acdc.yaml"] + files[1:])
    assert acdc.get_parsed_content("eval_split") == "validation" and acdc.get_parsed_content("image_mode") == "nearest"
    assert acdc.get_parsed_content("run_name") == "reference_supervised_acdc"


LOCALCONTRAST_REFERENCE = {
    "round_iterations": 301,
    "supervised_iterations": 5001,
    "rounds": 3,
    "max_iterations": 5001 + 3 * 301,
    "contrast_divide_by": "all",
    "contrast_cumulative": True,
    "intensity_per_image": False,
    "unlabeled_includes_labeled": True,
    "crf": True,
    # unchanged from the defaults, asserted so that a change of a default shows up here
    "learning_rate": 0.001,
    "batch_size": 20,
    "contrast_size": 5,
    "seg_min_classes": 3,
    "lam": 0.1,
    "temperature": 0.1,
    "num_anchors": 3,
    "reset_heads": True,
    "val_interval": 50,
    "seed": 1,
}


def test_localcontrast_reference_overlay_sets_every_knob(restore_scripts):
    """``configs/reference.yaml`` resolved, not run (its dense CRF needs pydensecrf2): every knob reaches the
    component that uses it."""
    import_bundle("localcontrast_2d")
    files = ["configs/train.yaml", "configs/reference.yaml"]
    parser = parse("localcontrast_2d", files)
    for key, value in LOCALCONTRAST_REFERENCE.items():
        assert parser.get_parsed_content(key) == value, key
    loss = parser.get_parsed_content("loss").local_loss
    assert loss.divide_by == "all" and loss.cumulative is True and loss.num_anchors == 3
    assert parser.get_parsed_content("train#intensity").per_image is False
    crf = parser.get_parsed_content("train#rounds#crf")  # the RoundHandler's argument: the reference's CRF settings
    assert type(crf).__name__ == "CRFSettings" and crf.iterations == 30
    assert parser["train#rounds#unlabeled_items"] == "@unlabeled_pool"
    assert parser["train#rounds#round_iterations"] == "@round_iterations"
    # the pool of volumes to pseudo-label: the unlabelled ones, then the labelled ones (datalists stubbed: no data)
    parser["datalists"] = {"labeled": [{"image": "l0.nii.gz", "label": "l0_label.nii.gz"}],
                           "unlabeled": [{"image": "u0.nii.gz"}, {"image": "u1.nii.gz"}]}
    pool = parser.get_parsed_content("unlabeled_pool")
    assert [item["image"] for item in pool] == ["u0.nii.gz", "u1.nii.gz", "l0.nii.gz"]
    default = parse("localcontrast_2d", ["configs/train.yaml"])
    default["datalists"] = parser["datalists"]
    assert [item["image"] for item in default.get_parsed_content("unlabeled_pool")] == ["u0.nii.gz", "u1.nii.gz"]
    assert default.get_parsed_content("train#rounds#crf") is None
    # the overlay holds only knobs train.yaml has (a misspelt key would silently do nothing)
    for key in overlay_keys("localcontrast_2d", "configs/reference.yaml"):
        assert key in default.config, key


# ================================================================================ 2. Switch knobs behave as the code


def test_switch_dice_on_raw_logits_is_the_reference_dice_loss(sw):
    """``softmax=False`` is train_single.py's DiceLoss(outs, labels) without softmax; it differs from the softmax Dice."""
    from scripts.losses import masked_dice_ce

    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 8) * 2
    target = (torch.rand(3, 8, 8) > 0.6).long()
    dice_raw, ce = masked_dice_ce(logits, target, softmax=False)
    onehot = F.one_hot(target, 2).movedim(-1, 1).float()
    ref = sum(1 - (2 * (logits[:, c] * onehot[:, c]).sum() + 1e-10) / (logits[:, c].sum() + onehot[:, c].sum() + 1e-10)
              for c in range(2)) / 2
    assert torch.allclose(dice_raw, ref, atol=1e-5)
    dice_prob, ce_prob = masked_dice_ce(logits, target)
    assert not torch.allclose(dice_raw, dice_prob, atol=1e-3) and torch.equal(ce, ce_prob)


def _switch_trainer(cls, net, teacher=None, **kwargs):
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    return cls(device="cpu", max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net, optimizer=opt,
               teacher=teacher, pretrain_iterations=1, amp=False, channels_last=False, **kwargs)


def test_switch_supervised_baseline_dice_on_logits(sw):
    from scripts.losses import masked_dice_ce
    from scripts.networks import UNet2D
    from scripts.trainer import SupervisedBaselineTrainer

    torch.manual_seed(0)
    img, lab = squares(4)
    batch = {"image": img, "label": lab[:, 0].long()}
    net = UNet2D(features=(4, 8, 8, 8, 8), projector=False).eval()  # eval: deterministic forwards
    for flag in (True, False):
        trainer = _switch_trainer(SupervisedBaselineTrainer, net, dice_on_logits=flag)
        net.eval()
        loss, logs, _ = trainer.selftrain_step(batch)
        dice, ce = masked_dice_ce(net(img), batch["label"], softmax=not flag)
        assert torch.allclose(logs["loss_dice"], dice, atol=1e-5) and torch.allclose(loss, (dice + ce) / 2, atol=1e-5)


class _ConvBN(nn.Module):
    """A 2-class conv + batch norm net without dropout: its train-mode outputs depend only on the batch statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_switch_train_mode_teacher_uses_batch_statistics_per_view(sw):
    from scripts.handlers import EMATeacher

    torch.manual_seed(0)
    net = _ConvBN()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.3)
        net.bn.running_var.fill_(2.0)
    up, uq = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8) + 1.0
    ref = EMATeacher(net, train_mode=True)
    ref.reset()
    conv = net.conv(up).detach()
    by_hand = F.batch_norm(conv, None, None, net.bn.weight, net.bn.bias, training=True)  # up's own statistics
    assert torch.allclose(ref.predict(up), by_hand, atol=1e-5)
    assert not torch.allclose(ref.predict(torch.cat([up, uq]))[:4], by_hand, atol=1e-3)  # the other half shifts them
    default = EMATeacher(net, train_mode=False)
    default.reset()
    running = F.batch_norm(conv, net.bn.running_mean, net.bn.running_var, net.bn.weight, net.bn.bias, training=False)
    assert torch.allclose(default.predict(up), running, atol=1e-5)
    assert torch.allclose(default.predict(torch.cat([up, uq]))[:4], running, atol=1e-5)


class _Recorder(nn.Module):
    """Wraps a network and records the batch size of every forward and projector call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        self.calls.append(("forward", x.shape[0]))
        return self.net(x)

    def project(self, x):
        self.calls.append(("project", x.shape[0]))
        return self.net.project(x)


class _TeacherRecorder:
    def __init__(self, net: nn.Module) -> None:
        self.net, self.calls = net, []

    def predict(self, x):
        self.calls.append(x.shape[0])
        with torch.no_grad():
            return self.net(x)


@pytest.mark.parametrize("per_view", [True, False])
@pytest.mark.parametrize("method", ["switch", "bcp"])
def test_switch_per_view_forward(sw, method, per_view):
    """The reference calls the teacher on each unlabelled half and the student on each mixed view."""
    from scripts.networks import UNet2D
    from scripts.trainer import BCPTrainer, SwitchTrainer
    from scripts.transforms import amplitude_swap

    torch.manual_seed(0)
    img, lab = squares(8)
    batch = {"image": img[:4], "label": lab[:4, 0].long(), "unlabeled_image": img[4:]}
    batch["image_fds"], batch["unlabeled_image_fds"] = amplitude_swap(img[:4], img[4:], 0.1)
    net = _Recorder(UNet2D(features=(4, 8, 8, 8, 8), projector=method == "switch"))
    teacher = _TeacherRecorder(UNet2D(features=(4, 8, 8, 8, 8), projector=False))
    cls, extra = (SwitchTrainer, {"coarse_size": 16, "fine_size": 4}) if method == "switch" else (BCPTrainer, {})
    trainer = _switch_trainer(cls, net, teacher=teacher, per_view_forward=per_view, **extra)
    trainer.pseudo_label = lambda x, threshold=0.5: teacher.predict(x).argmax(1)  # no LCC: only the calls matter
    loss, _, _ = trainer.selftrain_step(batch)
    assert torch.isfinite(loss)
    assert teacher.calls == ([2, 2] if per_view else [4])
    views = 4 if method == "switch" else 2
    expected = [("forward", 2)] * views if per_view else [("forward", 2 * views)]
    if method == "switch":
        expected = ([("forward", 2), ("project", 2)] * views) if per_view else expected + [("project", 8)]
    assert net.calls == expected


def test_switch_per_view_forward_normalises_each_view_alone(sw):
    from scripts.trainer import BCPTrainer

    torch.manual_seed(0)
    net = _ConvBN().train()
    a, b = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8) + 2.0
    separate = _switch_trainer(BCPTrainer, net, per_view_forward=True).views_forward([a, b])
    assert torch.allclose(separate, torch.cat([net(a), net(b)]), atol=1e-5)
    batched = _switch_trainer(BCPTrainer, net, per_view_forward=False).views_forward([a, b])
    assert torch.allclose(batched, net(torch.cat([a, b])), atol=1e-5)
    assert not torch.allclose(separate, batched, atol=1e-3)


def test_switch_pretrain_patch_weight_half(sw):
    from scripts.losses import mixed_dice_ce
    from scripts.masks import mix
    from scripts.networks import UNet2D
    from scripts.trainer import SwitchTrainer

    img, lab = squares(4, size=32)
    batch = {"image": img, "label": lab[:, 0].long()}
    net = UNet2D(features=(4, 8, 8, 8, 8), projector=True).eval()
    trainer = _switch_trainer(SwitchTrainer, net, pretrain_patch_weight=0.5, coarse_size=16, fine_size=4)
    torch.manual_seed(3)
    loss, logs, _ = trainer.pretrain_step(batch)
    torch.manual_seed(3)
    m = trainer.make_mask(2, (32, 32))
    logits = net(mix(img[:2], img[2:], m))
    for w_patch, same in ((0.5, True), (1.0, False)):
        dice, ce = mixed_dice_ce(logits, batch["label"][:2], batch["label"][2:], m, 1.0, w_patch)
        assert torch.allclose(loss, (dice + ce) / 2, atol=1e-5) == same


def _png_item(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    image = (rng.random((40, 48)) * 255).astype(np.uint8)
    label = np.zeros((40, 48), np.uint8)
    label[10:25, 12:30] = 1
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(label).save(tmp_path / "label.png")
    return {"image": str(tmp_path / "image.png"), "label": str(tmp_path / "label.png")}


def test_switch_no_augmentation_returns_the_base_transformed_input(sw, tmp_path):
    item = _png_item(tmp_path)
    for overlays, augmented in (([], True), (["configs/baseline_bcp.yaml", SW_REF, "configs/reference_bcp.yaml"], False)):
        parser = parse("switch_us", ["configs/train.yaml", *overlays])
        parser["image_size"] = 32
        base = parser.get_parsed_content("validate#preprocessing")(dict(item))
        for key in ("train#preprocessing", "train#unlabeled_preprocessing"):
            pipeline = parser.get_parsed_content(key)
            pipeline.set_random_state(seed=0)
            outs = [pipeline(dict(item)) for _ in range(12)]
            same = [torch.equal(o["image"], base["image"]) and torch.equal(o["label"], base["label"]) for o in outs]
            assert all(same) if not augmented else not all(same), key


def test_switch_empty_policy_zero_scores_an_empty_image_zero(sw):
    for name in ("scripts.common.metrics", "scripts.evaluation"):
        try:
            metrics = importlib.import_module(name)
            break
        except ImportError:
            continue
    empty = np.zeros((8, 8), bool)
    assert metrics.class_metrics(empty, empty, empty_policy="zero")["dice"] == 0.0  # torchmetrics' zero_division=0
    assert math.isnan(metrics.class_metrics(empty, empty, empty_policy="skip")["dice"])


# ================================================================================ 3. CrossMatch knobs behave as the code


def _reference_thresholds(tau0: float, n: int) -> list[float]:
    """The paper-era LA loop: iteration k uses ``conf_thresh``, updated after the loss from the 0-based counter."""

    def sigmoid_rampup(current, length):  # UA-MT's utils/ramps.py
        current = np.clip(current, 0.0, length)
        phase = 1.0 - current / length
        return float(np.exp(-5.0 * phase * phase))

    out, conf = [], tau0
    for iter_num in range(n):
        out.append(conf)
        conf = (tau0 + (1 - tau0) * sigmoid_rampup(iter_num, 17000)) * np.log(2)
    return out


def test_crossmatch_head_threshold_is_the_paper_era_code(cm):
    from scripts.trainer import confidence_threshold

    ln2 = math.log(2.0)
    assert confidence_threshold(1, 0.85, "head") == 0.85
    assert confidence_threshold(2, 0.85, "head") == pytest.approx((0.85 + 0.15 * math.exp(-5.0)) * ln2, abs=1e-12)
    at_9000 = (0.85 + 0.15 * math.exp(-5.0 * (1.0 - 8998 / 17000) ** 2)) * ln2
    assert confidence_threshold(9000, 0.85, "head") == pytest.approx(at_9000, abs=1e-12)
    assert confidence_threshold(2, 0.85, "head") == pytest.approx(0.590, abs=5e-4)
    assert at_9000 == pytest.approx(0.6235, abs=5e-4)  # "about 0.59 rising to 0.62"
    assert confidence_threshold(20000, 0.85, "head") == pytest.approx(ln2)
    ref = _reference_thresholds(0.85, 9001)
    for k in (1, 2, 3, 100, 4567, 9000, 9001):
        assert confidence_threshold(k, 0.85, "head") == pytest.approx(ref[k - 1], abs=1e-12), k
    assert confidence_threshold(5000, 0.95, "fixed") == 0.95


def test_crossmatch_lr_horizon_17000(cm):
    parser = parse("crossmatch_3d", ["configs/train.yaml", "configs/reference.yaml"])
    lam = parser.get_parsed_content("lr_scheduler#lr_lambda")
    for it in (0, 1, 4500, 9000):  # lr = 1e-3 (1 - it / 17000)^0.9 after update `it`, not 0 at the last iteration
        assert lam(it) == pytest.approx((1 - it / 17000) ** 0.9, rel=1e-9)
    assert lam(9000) > 0.5


def _cm_trainer(net, **kwargs):
    from scripts.trainer import CrossMatchTrainer

    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    return CrossMatchTrainer(device="cpu", max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net,
                             optimizer=opt, num_classes=4, amp=False, channels_last=False, **kwargs)


def _cm_batch(n: int = 2, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(n, 1, size, size, generator=g) for k in
             ("image", "unlabeled_image", "unlabeled_image_s1", "unlabeled_image_s2", "mix_image", "mix_image_s1",
              "mix_image_s2")}
    batch["label"] = torch.randint(0, 4, (n, size, size), generator=g)
    return batch


def _unet(cm):
    from scripts.networks import UNet2D

    torch.manual_seed(0)
    return UNet2D(1, 4, features=(4, 8, 8, 8, 8)) if _accepts_features(UNet2D) else UNet2D(1, 4)


def _accepts_features(cls) -> bool:
    import inspect

    return "features" in inspect.signature(cls).parameters


def test_crossmatch_mix_teacher_eval(cm):
    net = _unet(cm)
    x = torch.rand(2, 1, 32, 32)
    trainer = _cm_trainer(net, mix_teacher_eval=True)
    net.train()
    stats = [m.running_mean.clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        out = trainer.teacher_logits(x)
        expected = net.eval()(x)
    net.train()
    assert torch.allclose(out, expected, atol=1e-5)  # eval mode: running statistics, no dropout
    assert net.training  # put back in train mode
    after = [m.running_mean for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))
    with torch.no_grad():
        default = _cm_trainer(net, mix_teacher_eval=False).teacher_logits(x)
    assert not torch.allclose(default, expected, atol=1e-3)  # train mode: batch statistics


def test_crossmatch_teacher_dropout_is_the_train_mode_forward(cm):
    net = _unet(cm).train()
    x = torch.rand(2, 1, 32, 32)
    trainer = _cm_trainer(net, teacher_dropout=True)
    with torch.no_grad():
        torch.manual_seed(5)
        out = trainer.teacher_logits(x)
        torch.manual_seed(5)
        assert torch.allclose(out, net(x), atol=1e-6)  # the network's own train-mode forward, dropout included
        clean = _cm_trainer(net, teacher_dropout=False).teacher_logits(x)
    assert not torch.allclose(out, clean, atol=1e-3)


def _count_fp(net):
    calls = []
    original = net.forward_fp

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    net.forward_fp = counted
    return calls


def test_crossmatch_mix_ta_targets_and_loss_divisor(cm):
    batch = _cm_batch()
    losses = {}
    for ta, divisor in ((True, 2.0), (False, 2.0), (False, 3.0)):
        net = _unet(cm)
        calls = _count_fp(net)
        trainer = _cm_trainer(net, mix_ta_targets=ta, loss_divisor=divisor)
        trainer.state.iteration = 1
        torch.manual_seed(7)
        loss, logs, _ = trainer.step(dict(batch))
        losses[(ta, divisor)] = float(loss.detach())
        # HEAD: a no-grad fp pass on (x, mix) for the TA targets; paper-era: none (box 2 keeps u_w's own TA targets)
        assert len(calls) == (3 if ta else 2)
    assert losses[(False, 3.0)] * 3 == pytest.approx(losses[(False, 2.0)] * 2, rel=1e-5)
    with pytest.raises(ValueError, match="loss_divisor"):
        _cm_trainer(_unet(cm), loss_divisor=0.0)


def test_crossmatch_bn_statistics_from_every_pass(cm):
    """clean_bn_statistics false: the strong-view pass updates the running statistics too (the reference)."""
    from scripts.trainer import frozen_bn_statistics

    net = _unet(cm).train()
    x = torch.rand(2, 1, 32, 32) * 5
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for enabled, changes in ((True, False), (False, True)):
        before = [m.running_mean.clone() for m in bns]
        with torch.no_grad(), frozen_bn_statistics(net, enabled=enabled):
            net(x)
        assert any(not torch.equal(a, m.running_mean) for a, m in zip(before, bns)) == changes


def test_crossmatch_acdc_nearest_resizing(cm):
    """image_mode/back_mode nearest: the reference's order-0 zoom in and out (no interpolated values)."""
    from scripts.common.inference import SliceResizeInferer
    from scripts.transforms import acdc_train_transforms

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 20, 14, generator=g)
    label = torch.randint(0, 4, (1, 20, 14), generator=g).float()
    out = acdc_train_transforms((32, 32), image_mode="nearest")({"image": image, "label": label})
    values = set(image.flatten().tolist()) | {0.0}  # 0: the rotation's zero padding
    assert set(torch.as_tensor(out["image"]).flatten().tolist()) <= values
    bilinear = acdc_train_transforms((32, 32), image_mode="bilinear")({"image": image, "label": label})
    assert not set(torch.as_tensor(bilinear["image"]).flatten().tolist()) <= values

    class _Identity(nn.Module):
        def forward(self, x):
            return x.repeat(1, 4, 1, 1)

    volume = torch.rand(1, 1, 20, 14, 3, generator=g)
    for back, exact in (("nearest", True), ("bilinear", False)):
        pred = SliceResizeInferer((32, 32), mode="nearest", back_mode=back)(volume, _Identity())
        values = set(pred[:, 0].flatten().tolist())
        assert (values <= set(volume.flatten().tolist())) == exact


# ================================================================================ 4. end to end on the demo data

SW_TINY = ("--image_size", "64", "--batch_size", "2", "--pretrain_iterations", "4", "--selftrain_iterations", "4",
           "--val_interval", "4", "--num_workers", "0", "--log_interval", "2", "--max_pictures", "2")


def _copy(name: str, root: Path) -> Path:
    dst = root / name
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("runs", "models", "predictions", "__pycache__"))
    return dst


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _finished(bundle: Path, run: str) -> dict:
    folder = bundle / "runs" / run
    assert (folder / "FINISHED").exists() and (folder / "models" / "model.pt").exists(), sorted(folder.iterdir())
    return json.loads((folder / "evaluation" / "metrics_summary.json").read_text())


@pytest.fixture(scope="module")
def switch_copy(tmp_path_factory) -> Path:
    return _copy("switch_us", tmp_path_factory.mktemp("reference_switch"))


@pytest.fixture(scope="module")
def crossmatch_copy(tmp_path_factory) -> Path:
    return _copy("crossmatch_3d", tmp_path_factory.mktemp("reference_crossmatch"))


def _tiny_overrides(bundle: Path) -> tuple[str, ...]:
    """demo.yaml's picture count key (max_overlays before the shared runtime, max_pictures after)."""
    text = (bundle / "configs" / "train.yaml").read_text()
    return SW_TINY if "max_pictures:" in text else (*SW_TINY[:-2], "--max_overlays", "2")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["reference", "reference_supervised", "reference_bcp"])
def test_switch_reference_presets_run(switch_copy, preset):
    baseline = {"reference": [], "reference_supervised": ["configs/baseline_supervised.yaml"],
                "reference_bcp": ["configs/baseline_bcp.yaml"]}[preset]
    configs = ["configs/train.yaml", "configs/demo.yaml", *baseline, SW_REF]
    if preset != "reference":
        configs.append(f"configs/{preset}.yaml")
    _ok(run_bundle(switch_copy, configs, *_tiny_overrides(switch_copy), timeout=600))
    assert "dice" in json.dumps(_finished(switch_copy, preset))


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "preset"), [("la", "reference"), ("acdc", "reference"), ("acdc", "reference_supervised")])
def test_crossmatch_reference_presets_run(crossmatch_copy, kind, preset):
    configs = ["configs/train.yaml"] + (["configs/acdc.yaml"] if kind == "acdc" else [])
    configs += ["configs/baseline.yaml"] if preset == "reference_supervised" else []
    configs += ["configs/demo.yaml", "configs/reference.yaml"]
    configs += ["configs/reference_supervised.yaml"] if preset == "reference_supervised" else []
    # LA: 2 iterations and no validation pass (the sliding window over the phantom volumes is the slow part)
    iterations, val_interval = ("2", "1000") if kind == "la" else ("4", "4")
    _ok(run_bundle(crossmatch_copy, configs, "--max_iterations", iterations, "--val_interval", val_interval,
                   "--log_interval", "1", timeout=600))
    summary = _finished(crossmatch_copy, f"{preset}_{kind}")
    assert "dice" in json.dumps(summary)
    if kind == "acdc":  # the reference's ACDC test scores the validation split
        datalist = json.loads((crossmatch_copy / "data" / "phantom_acdc" / "datalist.json").read_text())
        (csv,) = (crossmatch_copy / "runs" / f"{preset}_{kind}" / "evaluation").glob("metrics_per_*.csv")
        rows = csv.read_text()
        assert len(rows.strip().splitlines()) - 1 == len(datalist["validation"])
