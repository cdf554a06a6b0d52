# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The maths of CrossMatch (docs/methods.md section 4): networks, feature perturbation, masked Dice, CutMix boxes,
inferers, schedules, phantoms and transforms of ``bundles/crossmatch_3d``."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import import_bundle
from torch import nn


@pytest.fixture(scope="module")
def cm():
    """The crossmatch_3d ``scripts`` package with the modules these tests use."""
    scripts = import_bundle("crossmatch_3d")
    for name in ("networks", "losses", "masks", "inferers", "common.inference", "common.runtime", "common.run_folder",
                 "common.schedules", "transforms", "common.phantom_3d"):
        importlib.import_module(f"scripts.{name}")
    return scripts


def _bn_eval(net: nn.Module) -> nn.Module:
    """Dropout layers in train mode, batch norm in eval mode (running statistics): rows stay independent."""
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return net


def _randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so eval-mode batch norm is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return net


# ------------------------------------------------------------------------------------------------ 1. networks


def test_parameter_counts(cm):
    from scripts.networks import UNet2D, VNet

    assert sum(p.numel() for p in VNet(1, 2, 16).parameters()) == 9_448_866
    assert sum(p.numel() for p in VNet(1, 2, 16, has_dropout=True).parameters()) == 9_448_866
    assert sum(p.numel() for p in UNet2D(1, 4).parameters()) == 1_944_324


def test_forward_single_tensor_and_encode_decode_round_trip(cm):
    from scripts.networks import UNet2D, VNet

    torch.manual_seed(0)
    vnet = _randomise_bn(VNet(1, 2, 16, has_dropout=True)).eval()
    x = torch.randn(1, 1, 32, 16, 16)
    with torch.no_grad():
        out = vnet(x)
        feats = vnet.encode(x)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 32, 16, 16)
        assert [tuple(f.shape) for f in feats] == [(1, 16 * 2**i, 32 // 2**i, 16 // 2**i, 16 // 2**i) for i in range(5)]
        torch.testing.assert_close(vnet.decode(feats), out, rtol=0, atol=0)

    unet = _randomise_bn(UNet2D(1, 4)).eval()
    x2 = torch.randn(2, 1, 48, 32)
    with torch.no_grad():
        out2 = unet(x2)
        feats2 = unet.encode(x2)
        assert isinstance(out2, torch.Tensor) and out2.shape == (2, 4, 48, 32)
        assert [tuple(f.shape) for f in feats2] == [(2, 16 * 2**i, 48 // 2**i, 32 // 2**i) for i in range(5)]
        torch.testing.assert_close(unet.decode(feats2), out2, rtol=0, atol=0)
        torch.testing.assert_close(unet(x2), out2, rtol=0, atol=0)

    # eval mode switches the built-in dropout off: the output is deterministic; in train mode with has_dropout the
    # same random stream gives the same result through encode/decode, a different one a different result
    x = torch.randn(2, 1, 16, 16, 16)  # two rows: train-mode batch norm needs more than one value at the bottleneck
    with torch.no_grad():
        torch.testing.assert_close(vnet(x), vnet(x), rtol=0, atol=0)
    vnet.train()
    with torch.no_grad():
        torch.manual_seed(3)
        a = vnet(x)
        torch.manual_seed(3)
        b = vnet.decode(vnet.encode(x))
        torch.manual_seed(4)
        c = vnet(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)  # the bottleneck / head Dropout3d(0.5) is active in train mode


def _fp_case(net, x_a, x_u, seed=11):
    """forward_fp (batched) versus separate encoder/decoder passes replaying the same channel-dropout masks."""
    calls = []
    original = net.perturb

    def recording_perturb(features, p):
        calls.append((p, [tuple(f.shape) for f in features]))
        return original(features, p)

    net.perturb = recording_perturb
    try:
        with torch.no_grad():
            torch.manual_seed(seed)
            batched = net.forward_fp(x_a, x_u)
    finally:
        del net.perturb
    with torch.no_grad():
        feats_a, feats_u = net.encode(x_a), net.encode(x_u)
        torch.manual_seed(seed)  # the only random draws of forward_fp in eval mode: perturb(weak) then perturb(strong)
        weak = net.perturb(feats_u, net.fp_weak)
        strong = net.perturb(feats_u, net.fp_strong)
        separate = (net.decode(feats_a), net.decode(feats_u), net.decode(weak), net.decode(strong))
    return batched, separate, calls, feats_u


@pytest.mark.parametrize("kind", ["vnet", "unet"])
def test_forward_fp_equals_separate_passes(cm, kind):
    from scripts.networks import UNet2D, VNet

    torch.manual_seed(0)
    if kind == "vnet":
        net = _randomise_bn(VNet(1, 2, 16, has_dropout=True)).eval()
        x_a, x_u = torch.randn(1, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16)
    else:
        net = _randomise_bn(UNet2D(1, 4)).eval()
        x_a, x_u = torch.randn(2, 1, 32, 32), torch.randn(3, 1, 32, 32)
    batched, separate, calls, feats_u = _fp_case(net, x_a, x_u)
    n_a, n_u = x_a.shape[0], x_u.shape[0]
    assert [b.shape[0] for b in batched] == [n_a, n_u, n_u, n_u]
    for got, want in zip(batched, separate):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # perturb saw every one of the five feature levels of the U half, with the weak then the strong rate
    assert [p for p, _ in calls] == [0.25, 0.75]
    for _, shapes in calls:
        assert shapes == [tuple(f.shape) for f in feats_u] and len(shapes) == 5
    # the perturbed streams really differ from the clean one and from each other
    _, u, u_w, u_s = batched
    assert not torch.allclose(u, u_w, atol=1e-3) and not torch.allclose(u, u_s, atol=1e-3)
    assert not torch.allclose(u_w, u_s, atol=1e-3)


def test_forward_fp_with_deterministic_masks(cm):
    """With ``perturb`` replaced by a fixed mask function, the batched pass is a pure function of the rows."""
    from scripts.networks import UNet2D

    torch.manual_seed(1)
    net = _randomise_bn(UNet2D(1, 4)).eval()

    def fixed_perturb(features, p):
        # keep channels whose index is not divisible by round(1/p) (p=0.25: drop every 4th; p=0.75: keep every 4th)
        out = []
        for f in features:
            c = torch.arange(f.shape[1])
            keep = (c % 4 != 0) if p < 0.5 else (c % 4 == 0)
            out.append(f * keep.view(1, -1, 1, 1).to(f.dtype) / (1 - p))
        return out

    net.perturb = fixed_perturb
    x_a, x_u = torch.randn(1, 1, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        a, u, u_w, u_s = net.forward_fp(x_a, x_u)
        fu = net.encode(x_u)
        torch.testing.assert_close(a, net(x_a), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(u, net(x_u), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(u_w, net.decode(fixed_perturb(fu, 0.25)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(u_s, net.decode(fixed_perturb(fu, 0.75)), rtol=1e-4, atol=1e-5)
        # row independence: changing the A half does not change the U streams
        _, u2, u_w2, u_s2 = net.forward_fp(torch.randn(1, 1, 32, 32), x_u)
    torch.testing.assert_close(u2, u, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u_w2, u_w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u_s2, u_s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["vnet", "unet"])
def test_fp_dropout_rates_are_channel_dropout(cm, kind):
    from scripts.networks import UNet2D, VNet

    net = VNet(1, 2, 16) if kind == "vnet" else UNet2D(1, 4)
    spatial = (2, 2, 2) if kind == "vnet" else (3, 3)
    assert (net.fp_weak, net.fp_strong) == (0.25, 0.75)
    torch.manual_seed(0)
    x = torch.rand(2, 8192, *spatial) + 0.5  # strictly positive, so zeros come from the dropout only
    for p in (net.fp_weak, net.fp_strong):
        (y,) = net.perturb([x], p)
        zero = (y == 0).flatten(2)
        assert (zero.all(-1) | ~zero.any(-1)).all()  # whole channels are dropped (Dropout2d/3d semantics)
        frac = zero.all(-1).float().mean().item()
        assert abs(frac - p) < 0.02, (p, frac)
        kept = ~zero.all(-1)
        ratio = (y.flatten(2) / x.flatten(2))[kept]
        torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / (1 - p)))
        # and each call draws fresh masks
        (y2,) = net.perturb([x], p)
        assert not torch.equal(y, y2)


@pytest.mark.parametrize("kind", ["vnet", "unet"])
def test_noisy_rows_keep_builtin_dropout_off(cm, kind):
    from scripts.networks import UNet2D, VNet

    torch.manual_seed(0)
    if kind == "vnet":
        net = _randomise_bn(VNet(1, 2, 8, has_dropout=True))  # narrower: the dropout logic does not depend on width
        x = torch.randn(3, 1, 16, 16, 16)
    else:
        net = _randomise_bn(UNet2D(1, 4))
        x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        clean = net.eval().encode(x)
        _bn_eval(net)
        rows = torch.tensor([True, False, True])
        noisy = net.encode(x, noisy_rows=rows)
        for level_clean, level_noisy in zip(clean, noisy):
            torch.testing.assert_close(level_noisy[1], level_clean[1], rtol=0, atol=1e-6)
        assert not torch.allclose(noisy[-1][0], clean[-1][0])  # the selected rows do get the dropout
        assert not torch.allclose(noisy[-1][2], clean[-1][2])
        no_rows = net.encode(x, noisy_rows=torch.zeros(3, dtype=torch.bool))
        for level_clean, level_quiet in zip(clean, no_rows):
            torch.testing.assert_close(level_quiet, level_clean, rtol=0, atol=1e-6)
        # forward_fp(noisy_u=False): the U stream is the clean network output (no head dropout in fp passes)
        a, u, _, _ = net.forward_fp(x[:1], x[1:], noisy_a=True, noisy_u=False)
        torch.testing.assert_close(u, net.eval()(x[1:]), rtol=1e-4, atol=1e-5)
        _bn_eval(net)
        a, u, _, _ = net.forward_fp(x[:1], x[1:], noisy_a=False, noisy_u=False)
        ref = net.eval()(x)
    torch.testing.assert_close(a, ref[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u, ref[1:], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- 3. masked Dice


def _hand_dice(prob, target, valid, classes, smooth):
    losses = []
    for c in classes:
        p = prob[:, c][valid]
        t = (target == c).float()[valid]
        losses.append(1 - (2 * (p * t).sum() + smooth) / ((p * p).sum() + (t * t).sum() + smooth))
    return torch.stack(losses).mean()


def test_dice_ignore_binary_hand_computation_and_ignore(cm):
    from scripts.losses import DiceIgnore, dice_ignore

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 6, 4, generator=g)
    target = torch.randint(0, 2, (2, 5, 6, 4), generator=g)
    ignore = torch.rand(2, 5, 6, 4, generator=g) < 0.3
    prob = logits.softmax(1)
    loss = dice_ignore(logits, target, ignore, binary=True)
    want = _hand_dice(prob.double(), target, ~ignore, [1], 1e-5)
    assert loss.ndim == 0
    assert abs(loss.item() - want.item()) < 1e-6
    # the sums run over the whole batch: not the mean of per-sample losses
    per_sample = torch.stack([dice_ignore(logits[i : i + 1], target[i : i + 1], ignore[i : i + 1]) for i in range(2)])
    assert abs(per_sample.mean().item() - loss.item()) > 1e-6
    # ignore=None == nothing ignored; module form agrees
    assert abs(dice_ignore(logits, target, None).item()
               - _hand_dice(prob.double(), target, torch.ones_like(ignore), [1], 1e-5).item()) < 1e-6
    assert DiceIgnore(binary=True)(logits, target, ignore).item() == loss.item()
    # changes at ignored voxels change nothing
    logits2, target2 = logits.clone(), target.clone()
    logits2.permute(0, 2, 3, 4, 1)[ignore] = torch.randn(int(ignore.sum()), 2, generator=g) * 5
    target2[ignore] = 1 - target2[ignore]
    assert dice_ignore(logits2, target2, ignore).item() == pytest.approx(loss.item(), abs=1e-7)
    # a change at one non-ignored voxel changes the loss (prediction or target)
    idx = tuple(int(i) for i in torch.nonzero(~ignore)[0])
    logits3 = logits.clone()
    logits3[idx[0], 1, idx[1], idx[2], idx[3]] += 3.0
    assert abs(dice_ignore(logits3, target, ignore).item() - loss.item()) > 1e-5
    target3 = target.clone()
    target3[idx] = 1 - target3[idx]
    assert abs(dice_ignore(logits, target3, ignore).item() - loss.item()) > 1e-5
    # everything ignored: (0 + s) / (0 + s) -> loss 0
    assert dice_ignore(logits, target, torch.ones_like(ignore)).item() == pytest.approx(0.0, abs=1e-6)
    # a perfect one-hot prediction gives ~0
    perfect = F.one_hot(target, 2).movedim(-1, 1).float() * 100
    assert dice_ignore(perfect, target, ignore).item() < 1e-6
    # the smoothing term is pinned where it dominates: no foreground anywhere, p1 ~ 1e-4 on 100 voxels
    empty = torch.zeros(1, 10, 10, dtype=torch.long)
    faint = torch.stack([torch.zeros(1, 10, 10), torch.full((1, 10, 10), -9.0)], 1)
    p1 = torch.sigmoid(torch.tensor(-9.0, dtype=torch.float64)).item()
    want = 1 - 1e-5 / (100 * p1**2 + 1e-5)
    assert dice_ignore(faint, empty).item() == pytest.approx(want, rel=1e-4)
    assert dice_ignore(faint, empty, smooth=1e-4).item() == pytest.approx(1 - 1e-4 / (100 * p1**2 + 1e-4), rel=1e-4)


def test_dice_ignore_multiclass_includes_background(cm):
    from scripts.losses import dice_ignore, supervised_loss

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 7, 9, generator=g)
    target = torch.randint(0, 4, (3, 7, 9), generator=g)
    ignore = torch.rand(3, 7, 9, generator=g) < 0.4
    prob = logits.softmax(1).double()
    loss = dice_ignore(logits, target, ignore, binary=False)
    want = _hand_dice(prob, target, ~ignore, range(4), 1e-4)
    assert abs(loss.item() - want.item()) < 1e-6
    without_bg = _hand_dice(prob, target, ~ignore, range(1, 4), 1e-4)
    assert abs(loss.item() - without_bg.item()) > 1e-4
    logits2, target2 = logits.clone(), target.clone()
    logits2.permute(0, 2, 3, 1)[ignore] = torch.randn(int(ignore.sum()), 4, generator=g) * 5
    target2[ignore] = (target2[ignore] + 1) % 4
    assert dice_ignore(logits2, target2, ignore, binary=False).item() == pytest.approx(loss.item(), abs=1e-7)
    idx = tuple(int(i) for i in torch.nonzero(~ignore)[0])
    target3 = target.clone()
    target3[idx] = (target3[idx] + 1) % 4
    assert abs(dice_ignore(logits, target3, ignore, binary=False).item() - loss.item()) > 1e-5
    # smoothing 1e-4 where it dominates: classes 1-3 absent from target and (almost) from the prediction
    empty = torch.zeros(1, 10, 10, dtype=torch.long)
    faint = torch.cat([torch.zeros(1, 1, 10, 10), torch.full((1, 3, 10, 10), -9.0)], 1)
    pc = (torch.exp(torch.tensor(-9.0, dtype=torch.float64)) / (1 + 3 * torch.exp(torch.tensor(-9.0)))).item()
    p0 = 1 - 3 * pc
    bg = 1 - (2 * 100 * p0 + 1e-4) / (100 * p0**2 + 100 + 1e-4)
    fg = 1 - 1e-4 / (100 * pc**2 + 1e-4)
    assert dice_ignore(faint, empty, binary=False).item() == pytest.approx((bg + 3 * fg) / 4, rel=1e-4, abs=1e-7)
    # the supervised Dice is the same formula without ignore; CE is the plain pixel-wise CE
    ce, dice = supervised_loss(logits, target, binary=False)
    assert abs(dice.item() - _hand_dice(prob, target, torch.ones_like(ignore), range(4), 1e-4).item()) < 1e-6
    assert abs(ce.item() - F.cross_entropy(logits, target).item()) < 1e-6


# --------------------------------------------------------------------------------------------- 4. CutMix boxes


class _Recorder:
    """Wrap a function of ``scripts.masks`` and record (args, result) of every call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append((args, out))
        return out


def _record(monkeypatch, masks):
    uni, rint = _Recorder(masks._uniform), _Recorder(masks._randint)
    monkeypatch.setattr(masks, "_uniform", uni)
    monkeypatch.setattr(masks, "_randint", rint)
    return uni, rint


def test_cutmix_box_2d_sides_and_placement(cm, monkeypatch):
    from scripts import masks

    uni, _ = _record(monkeypatch, masks)
    dims = (64, 48)
    g = torch.Generator().manual_seed(0)
    tall = 0
    for _ in range(300):
        uni.calls.clear()
        starts, sides = masks.sample_box(dims, generator=g)
        frac = uni.calls[0][1]
        r = uni.calls[-1][1]
        assert 0.02 <= frac <= 0.4 and 0.3 <= r <= 1 / 0.3
        vol = frac * math.prod(dims)
        # the reference's mask[y:y+h, x:x+w] on an (H, W) slice: h = sqrt(V r) on rows, w = sqrt(V / r) on columns
        assert sides == (math.floor(math.sqrt(vol * r)), math.floor(math.sqrt(vol / r)))
        assert all(0 <= a and a + s <= d for a, s, d in zip(starts, sides, dims))
        tall += sides[0] > sides[1]
    assert 0.65 < tall / 300 < 0.88  # r ~ U(0.3, 3.33) > 1 with probability 0.77: mostly taller than wide


def test_cutmix_box_3d_sides_on_xyz_axes(cm, monkeypatch):
    from scripts import masks

    uni, _ = _record(monkeypatch, masks)
    dims = (112, 112, 80)
    g = torch.Generator().manual_seed(1)
    fractions, wide_x = [], 0
    for _ in range(400):
        uni.calls.clear()
        starts, sides = masks.sample_box(dims, generator=g)
        frac, r = uni.calls[0][1], uni.calls[-1][1]
        vol = frac * math.prod(dims)
        want = (math.floor((vol / r) ** (1 / 3)), math.floor((vol * r) ** (1 / 3)), math.floor(vol ** (1 / 3)))
        assert sides == want
        assert all(0 <= a and a + s <= d for a, s, d in zip(starts, sides, dims))
        fractions.append(math.prod(sides) / math.prod(dims))
        assert math.prod(sides) <= vol
        wide_x += (sides[0] >= sides[1]) if r < 1 else (sides[0] <= sides[1])
    fractions = np.array(fractions)
    # U(0.02, 0.4) before flooring; flooring the sides only shrinks the box a little
    assert fractions.max() <= 0.4 and fractions.min() > 0.015
    assert fractions.min() < 0.05 and fractions.max() > 0.33
    assert 0.17 < fractions.mean() < 0.22
    assert wide_x == 400  # w = (V/r)^(1/3) is on x (axis 0), h = (V r)^(1/3) on y (axis 1)


def test_cutmix_box_faithful_axes_reproduce_reference(cm, monkeypatch):
    from scripts import masks

    uni, rint = _record(monkeypatch, masks)
    dims = (112, 112, 80)
    g = torch.Generator().manual_seed(2)
    clipped = 0
    for _ in range(100):
        uni.calls.clear()
        rint.calls.clear()
        box = masks.cutmix_boxes(1, dims, p=1.0, faithful_axes=True, generator=g)[0]
        frac, r = uni.calls[0][1], uni.calls[-1][1]
        vol = frac * math.prod(dims)
        w, h, d = int((vol / r) ** (1 / 3)), int((vol * r) ** (1 / 3)), int(vol ** (1 / 3))
        # the reference draws z in [0, 80 - d), y in [0, 112 - h), x in [0, 112 - w) ...
        assert [c[0] for c in rint.calls] == [(0, 80 - d, g), (0, 112 - h, g), (0, 112 - w, g)]
        z, y, x = (c[1] for c in rint.calls)
        # ... and writes mask[z:z+d, y:y+h, x:x+w] on the (112, 112, 80) array (numpy slicing clips at 80)
        ref = np.zeros(dims, bool)
        ref[z : z + d, y : y + h, x : x + w] = True
        assert np.array_equal(box.numpy(), ref)
        clipped += x + w > 80
    assert clipped > 10  # the transposed x-range often runs past 80 and is clipped


def test_cutmix_box_faithful_sample_box_stays_inside(cm):
    from scripts import masks

    dims = (112, 112, 80)
    g = torch.Generator().manual_seed(0)
    empty = 0
    for _ in range(3000):  # the x start lies past 80 in ~1% of the draws: the reference's box is then empty
        starts, sides = masks.sample_box(dims, faithful_axes=True, generator=g)
        assert all(0 <= a <= d and 0 <= s and a + s <= d for a, s, d in zip(starts, sides, dims)), (starts, sides)
        assert sides[0] == int(sides[0]) and starts[0] + sides[0] <= 80  # axis 0 gets the z-range [z, z + d), z < 80 - d
        empty += sides[2] == 0
    assert empty > 0


def test_cutmix_boxes_probability_and_paste(cm):
    from scripts import masks

    g = torch.Generator().manual_seed(3)
    boxes = masks.cutmix_boxes(600, (16, 16, 8), p=0.5, generator=g)
    assert boxes.shape == (600, 16, 16, 8) and boxes.dtype == torch.bool
    boxed = boxes.flatten(1).any(1).float().mean().item()
    assert 0.44 < boxed < 0.56
    for b in boxes[:50]:
        if b.any():  # each box is one solid cuboid
            idx = torch.nonzero(b)
            extent = idx.max(0).values - idx.min(0).values + 1
            assert int(extent.prod()) == int(b.sum())
    assert not masks.cutmix_boxes(20, (16, 16), p=0.0, generator=g).any()
    assert masks.cutmix_boxes(20, (16, 16), p=1.0, generator=g).flatten(1).any(1).all()

    base, patch = torch.zeros(2, 3, 6, 5), torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).view(2, 3, 6, 5) + 1
    box = torch.zeros(2, 6, 5, dtype=torch.bool)
    box[0, 1:4, 2:5] = True
    out = masks.paste(base, patch, box)
    inside = box.unsqueeze(1).expand_as(out)
    assert torch.equal(out[inside], patch[inside]) and (out[~inside] == 0).all()
    maps = masks.paste(torch.zeros(2, 6, 5, dtype=torch.long), torch.full((2, 6, 5), 3), box)
    assert torch.equal(maps == 3, box)
    with pytest.raises(ValueError):
        masks.paste(base, patch, torch.zeros(6, 5, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- 5. inferers


def _origin_predictor(calls):
    """Position-dependent predictor: every window's output depends on the coordinates stored in its first voxel."""

    def predictor(window):
        calls.append(tuple(window.shape))
        origin = window[:, :, :1, :1, :1]  # coordinate code of the window's first voxel
        logits = torch.cat([window * 0.1, origin.expand_as(window) * 0.01, torch.sin(origin).expand_as(window)], 1)
        return torch.softmax(logits, 1)

    return predictor


@pytest.mark.parametrize(
    "size, roi, strides",
    [((27, 22, 13), (16, 16, 8), (3, 3, 2)), ((27, 11, 13), (16, 16, 8), (3, 3, 2)), ((20, 9, 5), (16, 16, 8), (5, 3, 2))],
)
def test_paper_sliding_window_equals_plain_loop(cm, size, roi, strides):
    from scripts.inferers import PaperSlidingWindowInferer, sliding_window_loop

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.Conv3d(3, 3, 3, padding=1)).eval()

    def conv_predictor(w):
        return torch.softmax(net(w), 1)

    x = torch.randn(1, 1, *size)
    inferer = PaperSlidingWindowInferer(roi_size=roi, strides=strides, sw_batch_size=8)
    with torch.no_grad():
        got = inferer(x, conv_predictor)
        want = sliding_window_loop(conv_predictor, x, roi, strides, num_classes=3)
    assert got.shape == want.shape == (1, 3, *size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(1, *size))

    # a coordinate image (offset so padding zeros are distinguishable) with an origin-dependent predictor
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in size], indexing="ij"))
    coord = (1 + grid[0] + 100 * grid[1] + 10000 * grid[2]).view(1, 1, *size) / 1000.0
    calls_mw, calls_loop = [], []
    got = inferer(coord, _origin_predictor(calls_mw))
    want = sliding_window_loop(_origin_predictor(calls_loop), coord, roi, strides, num_classes=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    padded = [max(s, r) for s, r in zip(size, roi)]
    n_windows = math.prod(math.ceil((p - r) / s) + 1 for p, r, s in zip(padded, roi, strides))
    assert len(calls_loop) == n_windows and sum(c[0] for c in calls_mw) == n_windows


def test_paper_sliding_window_full_size_protocol(cm):
    """The paper's 112x112x80 windows at stride 18/18/4 on a slightly larger volume (cheap predictor)."""
    from scripts.inferers import PaperSlidingWindowInferer, sliding_window_loop

    size = (130, 115, 86)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in size], indexing="ij"))
    coord = (1 + grid[0] + 200 * grid[1] + 40000 * grid[2]).view(1, 1, *size) / 1e5
    calls_mw, calls_loop = [], []
    got = PaperSlidingWindowInferer()(coord, _origin_predictor(calls_mw))
    want = sliding_window_loop(_origin_predictor(calls_loop), coord, num_classes=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    n_windows = (math.ceil(18 / 18) + 1) * (math.ceil(3 / 18) + 1) * (math.ceil(6 / 4) + 1)
    assert len(calls_mw) == len(calls_loop) == n_windows


def test_overlap_for_strides(cm):
    from monai.inferers.utils import _get_scan_interval

    from scripts.inferers import overlap_for_strides

    roi, strides = (112, 112, 80), (18, 18, 4)
    ov = overlap_for_strides(roi, strides)
    assert [int(r * (1 - o)) for r, o in zip(roi, ov)] == list(strides)
    assert ov[0] == pytest.approx(0.839, abs=0.01) and ov[2] == pytest.approx(0.95, abs=0.01)
    assert _get_scan_interval((200, 200, 120), roi, 3, ov) == strides
    for r, s in itertools.product((8, 16, 80, 112), (1, 2, 3, 4, 5, 7, 18)):
        if s <= r:
            (o,) = overlap_for_strides((r,), (s,))
            assert int(r * (1 - o)) == s
    with pytest.raises(ValueError):
        overlap_for_strides((16,), (17,))
    with pytest.raises(ValueError):
        overlap_for_strides((16,), (0,))


def test_slice_resize_inferer(cm):
    from scripts.common.inference import AmpInferer, SliceResizeInferer
    from scripts.networks import UNet2D

    torch.manual_seed(0)
    net = _randomise_bn(UNet2D(1, 4)).eval()
    vol = torch.randn(1, 1, 40, 54, 3)
    with torch.no_grad():
        for back in ("bilinear", "nearest"):
            inferer = SliceResizeInferer(roi_size=(32, 32), slice_batch_size=2, back_mode=back)
            out = inferer(vol, net)
            assert out.shape == (1, 4, 40, 54, 3)
            for k in range(3):
                s = F.interpolate(vol[..., k], size=(32, 32), mode="bilinear", align_corners=False)
                y = net(s)
                y = F.interpolate(y, size=(40, 54), mode=back, **({"align_corners": False} if back == "bilinear" else {}))
                torch.testing.assert_close(out[..., k], y, rtol=1e-4, atol=1e-5)
        # a (B, C, H, W) input is one slice per item
        out = SliceResizeInferer(roi_size=(32, 32))(vol[..., 0], net)
        want = F.interpolate(net(F.interpolate(vol[..., 0], size=(32, 32), mode="bilinear", align_corners=False)),
                             size=(40, 54), mode="bilinear", align_corners=False)
        assert out.shape == (1, 4, 40, 54)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    default = SliceResizeInferer()  # the ACDC protocol's network size, resizing back to the native size
    assert default.roi_size == (256, 256) and default.back_mode == "bilinear"

    amp = AmpInferer(SliceResizeInferer(roi_size=(32, 32)), amp=False)
    prob = amp(vol, net)
    assert prob.shape == (1, 4, 40, 54, 3) and prob.dtype == torch.float32
    torch.testing.assert_close(prob.sum(1), torch.ones(1, 40, 54, 3), rtol=1e-5, atol=1e-5)
    assert (prob >= 0).all()
    with torch.no_grad():
        want = SliceResizeInferer(roi_size=(32, 32))(vol, lambda x: torch.softmax(net(x), 1))
    torch.testing.assert_close(prob, want, rtol=1e-4, atol=1e-5)


def test_amp_inferer_fp32_sliding_window(cm):
    from monai.inferers import SimpleInferer

    from scripts.common.inference import AmpInferer
    from scripts.inferers import PaperSlidingWindowInferer
    from scripts.networks import VNet

    torch.manual_seed(0)
    net = _randomise_bn(VNet(1, 2, 8)).eval()
    x = torch.randn(1, 1, 20, 18, 16)
    prob = AmpInferer(PaperSlidingWindowInferer((16, 16, 16), (4, 2, 16)), amp=False)(x, net)
    assert prob.shape == (1, 2, 20, 18, 16) and prob.dtype == torch.float32
    torch.testing.assert_close(prob.sum(1), torch.ones(1, 20, 18, 16), rtol=1e-5, atol=1e-5)
    simple = AmpInferer(SimpleInferer(), amp=False, channels_last=False)(x[..., :16, :16, :], net)
    with torch.no_grad():
        torch.testing.assert_close(simple, torch.softmax(net(x[..., :16, :16, :]), 1), rtol=1e-5, atol=1e-6)
    logits = AmpInferer(SimpleInferer(), amp=False, softmax=False)(x[..., :16, :16, :], net)
    assert not torch.allclose(logits.sum(1), torch.ones(1, 16, 16, 16))


def test_amp_inferer_half_weights_copy_matches_autocast(cm):
    from scripts.common.inference import AmpInferer, fold_batch_norm
    from scripts.common.runtime import network_to_memory_format
    from scripts.inferers import PaperSlidingWindowInferer
    from scripts.networks import VNet

    torch.manual_seed(0)
    net = _randomise_bn(VNet(1, 2, 8)).eval()
    x = torch.randn(1, 1, 20, 18, 16)
    window = PaperSlidingWindowInferer((16, 16, 16), (4, 2, 16))
    prob = AmpInferer(window, amp=True, amp_dtype="bfloat16")(x, net)  # folded copy with bf16 weights
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the network itself stays fp32
    # the same folded network under autocast with fp32 weights, cast by autocast at every call
    folded = network_to_memory_format(fold_batch_norm(net)[0], True)
    ref = AmpInferer(window, amp=True, amp_dtype="bfloat16", fold_bn=False)(x, folded)
    assert prob.dtype == torch.float32
    torch.testing.assert_close(prob, ref, rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind", ["vnet", "unet"])
def test_fold_batch_norm_same_function_original_untouched(cm, kind):
    from scripts.common.inference import fold_batch_norm
    from scripts.networks import UNet2D, VNet

    torch.manual_seed(0)
    net, x, n_bn = ((VNet(1, 2, 8), torch.randn(2, 1, 16, 16, 16), 29) if kind == "vnet"
                    else (UNet2D(1, 4), torch.randn(2, 1, 32, 32), 18))
    net = _randomise_bn(net).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    folded, count = fold_batch_norm(net)
    assert count == n_bn and not folded.training
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert net.training and sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()) == n_bn
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # the original is not modified
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net.eval()(x), rtol=1e-4, atol=1e-5)


def test_channels_last_auto_follows_mixed_precision_and_avx512(cm, monkeypatch):
    from scripts.common import runtime
    from scripts.common.inference import AmpInferer, SliceResizeInferer
    from scripts.common.runtime import resolve_channels_last
    from scripts.networks import UNet2D

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    for flags, fp32_cpu in (({"avx2", "avx512f"}, True), ({"avx2"}, False)):
        monkeypatch.setattr(runtime, "_cpu_flags", lambda flags=flags: frozenset(flags))
        assert resolve_channels_last("auto", torch.bfloat16) is True
        # fp32 on CPU: channels-last where oneDNN has AVX-512 kernels (faster there, even or slower with AVX2)
        assert resolve_channels_last("auto", None) is fp32_cpu and runtime.cpu_has_avx512() is fp32_cpu
        assert resolve_channels_last("auto", None, "cuda:0") is False
        assert resolve_channels_last("auto", torch.float16, torch.device("cuda")) is True
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below AVX-512 runs AVX2 kernels
    assert runtime.cpu_has_avx512() is False and resolve_channels_last("auto", None) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert runtime.cpu_has_avx512() is True
    assert resolve_channels_last(True, None) is True and resolve_channels_last(False, torch.bfloat16) is False
    assert resolve_channels_last(False, None, "cpu") is False  # forcing the layout still wins
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        resolve_channels_last("yes", None)
    # a 2D network on a volume, bf16 + channels-last (the folded copy is converted, the network is not)
    torch.manual_seed(0)
    net = _randomise_bn(UNet2D(1, 4)).eval()
    x = torch.randn(1, 1, 40, 36, 3)
    bf16 = AmpInferer(SliceResizeInferer(roi_size=(32, 32)), amp=True, amp_dtype="bfloat16")(x, net)
    fp32 = AmpInferer(SliceResizeInferer(roi_size=(32, 32)), amp=False)(x, net)
    assert bf16.shape == fp32.shape == (1, 4, 40, 36, 3)
    assert all(p.is_contiguous() for p in net.parameters())
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.05)
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() > 0.97


# ------------------------------------------------------------------------------------------------ 7. common


def test_poly_lr(cm):
    from scripts.common.schedules import PolyLR

    poly = PolyLR(100)
    assert poly(0) == 1.0 and poly(100) == 0.0 and poly(250) == 0.0
    for i in (1, 10, 50, 99):
        assert poly(i) == pytest.approx((1 - i / 100) ** 0.9, rel=1e-12)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, PolyLR(40))
    lrs = []
    for _ in range(45):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.01 * (1 - 1 / 40) ** 0.9)
    assert lrs[19] == pytest.approx(0.01 * 0.5**0.9)
    assert lrs[39:] == [0.0] * 6
    with pytest.raises(ValueError):
        PolyLR(0)


def test_resolve_run_dir_and_amp_dtype(cm, tmp_path):
    from pathlib import Path

    from scripts.common.run_folder import FINISHED_MARKER, resolve_run_dir
    from scripts.common.runtime import resolve_amp_dtype

    first = Path(resolve_run_dir(str(tmp_path), "run"))
    assert first == tmp_path / "run" and first.is_dir()
    (first / "ckpt.pt").write_text("x")
    assert Path(resolve_run_dir(str(tmp_path), "run")) == first  # unfinished: resumed in place
    (first / FINISHED_MARKER).write_text("")
    second = Path(resolve_run_dir(str(tmp_path), "run"))
    assert second == tmp_path / "run_2" and (first / FINISHED_MARKER).exists() and (first / "ckpt.pt").exists()
    (second / FINISHED_MARKER).write_text("")
    assert Path(resolve_run_dir(str(tmp_path), "run")) == tmp_path / "run_3"
    again = Path(resolve_run_dir(str(tmp_path), "run", overwrite=True))
    assert again == first and not (first / FINISHED_MARKER).exists()

    assert resolve_amp_dtype("cpu", amp=False) is None
    assert resolve_amp_dtype("cpu", amp=False, dtype="bfloat16") is None
    assert resolve_amp_dtype("cuda", amp=False) is None
    assert resolve_amp_dtype("cpu", amp=True, dtype="bfloat16") is torch.bfloat16
    assert resolve_amp_dtype("cpu", amp=True, dtype=torch.float16) is torch.float16


# ----------------------------------------------------------------------------------------------- 8. phantoms


def test_la_phantom(cm):
    from scripts.common.phantom_3d import LA_SIZE, la_phantom

    img, lab = la_phantom(0)
    assert img.shape == lab.shape == LA_SIZE and img.dtype == np.float32 and lab.dtype == np.uint8
    img2, lab2 = la_phantom(0)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    small = la_phantom(1, shape=(40, 40, 28))
    assert not np.array_equal(small[0], la_phantom(2, shape=(40, 40, 28))[0])
    assert set(np.unique(lab).tolist()) == {0, 1}
    assert 0.01 < lab.mean() < 0.5
    assert abs(float(img.mean())) < 1e-4 and abs(float(img.std()) - 1) < 1e-3
    fg, bg = img[lab == 1].mean(), img[lab == 0].mean()
    assert fg > bg + 1.0  # the enhancing atrium is brighter than everything else on average


def test_cardiac_phantom(cm):
    from scripts.common.phantom_3d import ACDC_SIZE, cardiac_phantom

    img, lab = cardiac_phantom(0)
    assert img.shape == lab.shape == ACDC_SIZE and img.dtype == np.float32 and lab.dtype == np.uint8
    img2, lab2 = cardiac_phantom(0)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    img3, lab3 = cardiac_phantom(1)
    assert not np.array_equal(img, img3) and not np.array_equal(lab, lab3)
    for image, label in ((img, lab), (img3, lab3)):
        assert set(np.unique(label).tolist()) == {0, 1, 2, 3}
        assert image.min() == pytest.approx(0.0, abs=1e-6) and image.max() == pytest.approx(1.0, abs=1e-6)
        means = {c: image[label == c].mean() for c in range(4)}
        # bright blood pools (LV, RV), dark myocardium, background darkest on average
        assert means[3] > means[2] + 0.2 and means[1] > means[2] + 0.2 and means[2] > means[0]
        for z in range(label.shape[2]):  # LV and myocardium in every slice
            assert (label[..., z] == 3).any() and (label[..., z] == 2).any()


def test_write_phantom_dataset(cm, tmp_path, monkeypatch):
    from scripts.common import phantom_3d as phantom

    for kind, spacing in (("acdc", [1.5, 1.5, 8.0]), ("la", [0.625] * 3)):
        if kind == "la":  # the real generator at a small size, to keep the test fast
            real = phantom.la_phantom
            monkeypatch.setattr(phantom, "la_phantom", lambda seed, _real=real: _real(seed, shape=(24, 20, 16)))
        out = phantom.write_phantom_dataset(tmp_path / kind, kind=kind, seed=3)
        datalist = json.loads((out / "datalist.json").read_text())
        assert datalist["spacing"] == spacing
        counts = {split: len(datalist[split]) for split in phantom.PHANTOM_SPLITS[kind]}
        assert counts == phantom.PHANTOM_SPLITS[kind] == datalist["split"]["counts"]
        cases = [item["case"] for split in counts for item in datalist[split]]
        assert len(set(cases)) == len(cases)
        classes = {int(k) for k in datalist["labels"]}
        assert classes == ({0, 1} if kind == "la" else {0, 1, 2, 3})
        for split in counts:
            for item in datalist[split]:
                assert ("label" in item) == (split != "unlabeled")
                im = nib.load(out / item["image"])
                assert np.allclose(np.diag(im.affine)[:3], spacing) and np.allclose(im.header.get_zooms(), spacing)
                if "label" in item:
                    lab = nib.load(out / item["label"])
                    assert lab.shape == im.shape and np.allclose(lab.affine, im.affine)
                    assert set(np.unique(np.asarray(lab.dataobj)).tolist()) <= classes
        first = np.asarray(nib.load(out / datalist["labeled"][0]["image"]).dataobj)
        second = np.asarray(nib.load(out / datalist["labeled"][1]["image"]).dataobj)
        assert not np.array_equal(first, second)
        with pytest.raises(FileExistsError):
            phantom.write_phantom_dataset(out, kind=kind)


# --------------------------------------------------------------------------------------------- 9. transforms


def test_rand_rot_flip_same_op_on_image_and_label(cm):
    from scripts.transforms import RandRotFlipd

    image = torch.arange(6 * 6 * 4, dtype=torch.float32).view(1, 6, 6, 4)
    label = (image.long() % 7).to(torch.uint8)
    # rot90 by k in the first two spatial axes, then a flip along spatial axis 0 or 1 (the flip always happens, so
    # the 8 (k, axis) pairs give the 4 reflections of the square; never the identity)
    candidates = [torch.flip(torch.rot90(image, k, dims=(1, 2)), dims=(1 + axis,))
                  for k, axis in itertools.product(range(4), range(2))]
    seen = set()
    t = RandRotFlipd(keys=["image", "label"])
    for seed in range(40):
        t.set_random_state(seed)
        out = t({"image": image, "label": label})
        match = [i for i, c in enumerate(candidates) if torch.equal(out["image"], c)]
        assert match and not torch.equal(out["image"], image)
        seen.add(tuple(out["image"].flatten()[:8].tolist()))
        assert torch.equal(out["label"], (out["image"].long() % 7).to(torch.uint8))  # same rot/flip on the label
        assert out["label"].dtype == torch.uint8
    assert len(seen) == 4
    t0 = RandRotFlipd(keys=["image", "label"], prob=0.0)
    out = t0({"image": image, "label": label})
    assert torch.equal(out["image"], image)


def test_signed_gamma_is_torchio_random_gamma(cm):
    from scripts.transforms import RandSignedGammad

    x = torch.linspace(-3, 3, 601).view(1, 601)
    t = RandSignedGammad(keys=["image", "image_s1"], log_gamma=0.5)
    log_gammas = []
    for seed in range(400):
        t.set_random_state(seed)
        out = t({"image": x, "image_s1": 2 * x})
        gamma = t.gamma
        log_gammas.append(math.log(gamma))
        torch.testing.assert_close(out["image"], torch.sign(x) * x.abs() ** gamma)  # sign preserving, no rescaling
        torch.testing.assert_close(out["image_s1"], torch.sign(x) * (2 * x).abs() ** gamma)
    log_gammas = np.array(log_gammas)
    assert log_gammas.min() >= -0.5 and log_gammas.max() <= 0.5
    assert log_gammas.min() < -0.45 and log_gammas.max() > 0.45
    assert abs(log_gammas.mean()) < 0.04  # log-uniform: gamma < 1 as often as gamma > 1
    assert abs((log_gammas < -0.25).mean() - 0.25) < 0.06
    t0 = RandSignedGammad(keys="image", prob=0.0)
    assert torch.equal(t0({"image": x})["image"], x)


def _write_nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.diag([0.625, 0.625, 0.625, 1.0])), str(path))


def test_la_pipelines(cm, tmp_path):
    from scripts.transforms import STRONG_KEYS, la_train_transforms, la_unlabeled_transforms

    rng = np.random.default_rng(0)
    from scipy import ndimage

    image = ndimage.gaussian_filter(rng.standard_normal((40, 36, 12)), 2).astype(np.float32)
    image = (image - image.mean()) / image.std()
    label = (image > 0.5).astype(np.uint8)
    _write_nifti(tmp_path / "img.nii.gz", image)
    _write_nifti(tmp_path / "lab.nii.gz", label)
    t = la_train_transforms(roi_size=(32, 32, 16))
    for seed in range(4):
        t.set_random_state(seed)
        out = t({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")})
        img, lab = out["image"], out["label"]
        assert img.shape == lab.shape == (1, 32, 32, 16)
        assert img.dtype == torch.float32 and not torch.is_floating_point(lab)
        assert set(torch.unique(lab).tolist()) <= {0, 1}
        # joint geometry: the label is still the thresholded image (z was zero padded: both 0 there)
        torch.testing.assert_close(lab, (img > 0.5).to(lab.dtype))
        assert (img[..., :2] == 0).all() and (img[..., -2:] == 0).all()  # 12 -> 16 padded symmetrically

    tu = la_unlabeled_transforms(roi_size=(32, 32, 16))
    differ = 0
    for seed in range(8):
        tu.set_random_state(seed)
        out = tu({"image": str(tmp_path / "img.nii.gz")})
        assert set(out) >= {"image", *STRONG_KEYS}
        for key in ("image", *STRONG_KEYS):
            assert out[key].shape == (1, 32, 32, 16)
        s1, s2, w = (torch.as_tensor(out[k]).float() for k in (*STRONG_KEYS, "image"))
        assert not torch.equal(s1, s2)
        differ += (not torch.allclose(s1, w)) + (not torch.allclose(s2, w))
        # strong views are photometric only: still spatially aligned with the weak view
        inside = w != 0
        corr = np.corrcoef(w[inside].numpy(), s1[inside].numpy())[0, 1]
        assert corr > 0.5
    assert differ >= 12


def test_acdc_pipelines(cm):
    from scripts.transforms import STRONG_KEYS, acdc_train_transforms, acdc_unlabeled_transforms

    g = torch.Generator().manual_seed(0)
    label = torch.zeros(1, 50, 40, dtype=torch.uint8)
    label[0, 10:40, 8:30] = 1
    label[0, 15:35, 12:26] = 2
    label[0, 20:30, 16:22] = 3
    image = label.float() / 3 * 0.98 + 0.01 * torch.rand(1, 50, 40, generator=g)  # in [0, 1]
    for mode in ("bilinear", "nearest"):
        t = acdc_train_transforms(size=(64, 64), image_mode=mode)
        for seed in range(8):
            t.set_random_state(seed)
            out = t({"image": image.clone(), "label": label.clone()})
            img, lab = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
            assert img.shape == lab.shape == (1, 64, 64)
            assert set(torch.unique(lab).tolist()) <= {0, 1, 2, 3}
            assert len(torch.unique(lab)) == 4
            if mode == "nearest":  # image and label moved together
                torch.testing.assert_close(torch.round(img * 3), lab.float())

    tu = acdc_unlabeled_transforms(size=(64, 64))
    for seed in range(4):
        tu.set_random_state(seed)
        out = tu({"image": image.clone()})
        for key in ("image", *STRONG_KEYS):
            assert tuple(out[key].shape) == (1, 64, 64)
        for key in STRONG_KEYS:
            x = torch.as_tensor(out[key])
            assert x.min() >= 0 and x.max() <= 1
