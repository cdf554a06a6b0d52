# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The maths of the localcontrast_2d bundle: network, heads, segmentation and local contrastive losses.

ALGORITHMS.md 4.1 (network), 4.4 (losses), 4.7.2 and section 0 (the contrastive loss normalised once).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import import_bundle

import_bundle("localcontrast_2d")
from scripts.losses import (  # noqa: E402
    JointLoss,
    LocalContrastiveLoss,
    SegmentationLoss,
    anchor_weights,
    default_class_weights,
    local_contrastive_loss,
    sample_anchors,
)
from scripts.networks import LocalContrastUNet  # noqa: E402


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _cbr(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return _conv(cin, cout, k, bias) + 2 * cout  # conv + BN gamma/beta


def _hand_counts(width: int = 16, in_channels: int = 1, num_classes: int = 4) -> dict[str, int]:
    f = [width, 2 * width, 4 * width, 8 * width, 8 * width]
    ins = [in_channels, *f]
    encoder = sum(_cbr(ins[i], f[i]) + _cbr(f[i], f[i]) for i in range(5)) + 2 * _cbr(f[4], f[4])
    decoder = 0
    for j in range(5):
        cin, out = (f[4] if j == 0 else f[5 - j]), f[4 - j]
        decoder += _cbr(cin, out, k=2) + _cbr(2 * out, out) + (_cbr(out, out) if j < 4 else 0)
    g = 2 * _cbr(width, width) + _conv(width, num_classes, 3, bias=False)
    h = _cbr(width, width, 1, bias=False) + _conv(width, width, 1, bias=False)
    return {"backbone": encoder + decoder, "g": g, "h": h, "total": encoder + decoder + g + h}


def test_parameter_counts_match_the_spec():
    with torch.device("meta"):
        net = LocalContrastUNet(in_channels=1, num_classes=4, width=16)
    measured = {
        "backbone": _count(net.encoder) + _count(net.decoder),
        "g": _count(net.seg_head),
        "h": _count(net.cont_head),
        "total": _count(net),
    }
    assert measured == _hand_counts()
    # ALGORITHMS.md 4.1 (ACDC): encoder/decoder 2,090,480; g 5,280; h 544; total 2,096,304
    assert measured == {"backbone": 2_090_480, "g": 5_280, "h": 544, "total": 2_096_304}
    with torch.device("meta"):
        small = LocalContrastUNet(in_channels=2, num_classes=3, width=4)
    assert _count(small) == _hand_counts(4, 2, 3)["total"]


def test_output_shapes_forward_train_and_torchscript():
    torch.manual_seed(0)
    net = LocalContrastUNet(in_channels=1, num_classes=4, width=4, embed_channels=6)
    x = torch.randn(4, 1, 32, 64)
    assert net(x).shape == (4, 4, 32, 64)
    logits, emb = net.forward_train(x)
    assert logits.shape == (4, 4, 32, 64) and emb.shape == (4, 6, 32, 64)
    logits, emb = net.forward_train(x, seg_rows=slice(0, 1), embed_rows=slice(1, 4))
    assert logits.shape == (1, 4, 32, 64) and emb.shape == (3, 6, 32, 64)
    feats = net.encode(x)
    assert [tuple(t.shape[1:]) for t in feats] == [
        (4, 32, 64),
        (8, 16, 32),
        (16, 8, 16),
        (32, 4, 8),
        (32, 2, 4),
        (32, 1, 2),
    ]
    assert net.decode(feats).shape == (4, 4, 32, 64)  # dec_c1_a has width channels
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.randn(1, 1, 48, 32))
    net.eval()
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_two_by_two_up_convolution_pads_bottom_right_like_tensorflow():
    net = LocalContrastUNet(width=2)
    dc = net.decoder[0].dc
    assert isinstance(dc.pad, torch.nn.ZeroPad2d) and tuple(dc.pad.padding) == (0, 1, 0, 1)
    assert dc.conv.kernel_size == (2, 2) and dc.conv.padding == (0, 0)
    x = torch.arange(4.0).view(1, 1, 2, 2)
    conv = torch.nn.Conv2d(1, 1, 2, bias=False)
    conv.weight.data = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = conv(dc.pad(x))  # SAME: out[i, j] = sum_{a,b} w[a, b] * x[i + a, j + b], zero beyond the end
    assert torch.equal(out[0, 0], torch.tensor([[0 + 2 + 6 + 12.0, 1 + 0 + 9 + 0], [2 + 6 + 0 + 0, 3.0]]))


def test_reset_heads_keeps_the_backbone_and_redraws_the_heads():
    torch.manual_seed(0)
    net = LocalContrastUNet(width=4)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # move every parameter away from its initial value, BN gamma/beta included
    net.train()
    net.forward_train(torch.randn(2, 1, 32, 32))  # update the running statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.reset_heads(generator=torch.Generator().manual_seed(3))
    after = net.state_dict()
    head_keys = [k for k in after if k.startswith(("seg_head.", "cont_head."))]
    assert head_keys and len(head_keys) < len(after)
    for k, v in after.items():
        if k in head_keys:
            continue
        assert torch.equal(v, before[k]), k  # backbone weights and BN statistics untouched
    for name, module in [("seg_head", net.seg_head), ("cont_head", net.cont_head)]:
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                assert not torch.equal(m.weight, before[f"{name}." + _path(module, m) + ".weight"])
                fan_in = m.weight[0].numel()
                assert abs(float(m.weight.detach().std()) - math.sqrt(2 / fan_in)) < 0.5 * math.sqrt(2 / fan_in)
            if isinstance(m, torch.nn.BatchNorm2d):
                assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(
                    m.bias, torch.zeros_like(m.bias)
                )
                assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
    # the same generator seed gives the same heads
    again = LocalContrastUNet(width=4)
    again.load_state_dict(before)
    again.reset_heads(generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items())
    # optionally the backbone BN statistics restart too (the reference's fresh moving averages), weights kept
    again.reset_heads(reset_backbone_bn_stats=True)
    bn = again.encoder[0].a.bn
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert torch.equal(bn.weight, before["encoder.0.a.bn.weight"])


def _path(root: torch.nn.Module, target: torch.nn.Module) -> str:
    return next(n for n, m in root.named_modules() if m is target)


# ---------------------------------------------------------------------------------------------------------------
# local contrastive loss


def _hand_loss(e1, e2, l1, l2, num_classes, tau, groups1, groups2, divide_by="present", cumulative_p=None):
    """The loss written out with plain torch ops, one pixel at a time (float64).

    ``groups{1,2}[p][c]`` is the list of anchor pixels (flat indices, repeats allowed) of class ``c`` in image
    1/2 of pair ``p``. Classes absent from an image have no mean there and are left out of every sum.
    """
    b, d = e1.shape[:2]
    k = num_classes - 1
    pair_terms = []
    for p in range(b):
        emb = [e1[p].double().reshape(d, -1), e2[p].double().reshape(d, -1)]
        lab = [l1[p].reshape(-1), l2[p].reshape(-1)]
        mu = [
            {c: emb[i][:, lab[i] == c].mean(dim=1) for c in range(1, num_classes) if (lab[i] == c).any()}
            for i in (0, 1)
        ]
        group_means, raw_sum = [], 0.0
        for i, groups in ((0, groups1), (1, groups2)):
            j = 1 - i
            for c in range(1, num_classes):
                pixels = groups[p].get(c, [])
                if not pixels:
                    continue
                losses = []
                for u in pixels:
                    zu = emb[i][:, u]

                    def s(m, zu=zu):
                        return torch.dot(zu, m) / (zu.norm() * m.norm()) / tau

                    den = sum(torch.exp(s(m)) for m in mu[i].values()) + sum(torch.exp(s(m)) for m in mu[j].values())
                    loss_u = -torch.log(torch.exp(s(mu[i][c])) / den)
                    if c in mu[j]:
                        loss_u = loss_u - torch.log(torch.exp(s(mu[j][c])) / den)
                    losses.append(loss_u)
                group_means.append(sum(losses) / len(losses))
                raw_sum = raw_sum + sum(losses)
        pair_terms.append((group_means, raw_sum))
    if cumulative_p is not None:  # the reference's loop: the running sum is re-divided on every pair
        running = 0.0
        for _, raw in pair_terms:
            running = (running + raw) / (2 * cumulative_p * k)
        return running / b
    if divide_by == "all":
        return sum(sum(g) / (2 * k) if g else 0.0 for g, _ in pair_terms) / b
    valid = [sum(g) / len(g) for g, _ in pair_terms if g]
    return sum(valid) / len(valid)


def _anchor_tensor(groups, b, num_classes):
    p_max = max(len(v) for g in groups for v in g.values())
    out = torch.full((b, num_classes - 1, p_max), -1, dtype=torch.long)
    for p in range(b):
        for c, pixels in groups[p].items():
            out[p, c - 1, : len(pixels)] = torch.tensor(pixels)
    return out


def _toy_pair_batch(seed: int = 0):
    """Two pairs of 4x4 images with 3 classes, 3-d embeddings; class 2 is absent from image 2 of pair 1."""
    g = torch.Generator().manual_seed(seed)
    e1 = torch.randn(2, 3, 4, 4, generator=g)
    e2 = torch.randn(2, 3, 4, 4, generator=g)
    l1 = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2], [0, 2, 2, 2], [0, 0, 0, 0]]).expand(2, 4, 4).clone()
    l2 = torch.tensor([[1, 1, 0, 0], [2, 2, 0, 0], [2, 0, 0, 1], [0, 0, 0, 0]]).expand(2, 4, 4).clone()
    l2[1][l2[1] == 2] = 0
    return e1, e2, l1, l2


def test_loss_equals_the_hand_computation():
    e1, e2, l1, l2 = _toy_pair_batch()
    # explicit anchors: pixel indices h * 4 + w of the right class; a repeat (drawn with replacement)
    groups1 = [{1: [2, 5, 5], 2: [7, 9, 10]}, {1: [3, 6, 2], 2: [11, 11, 9]}]
    groups2 = [{1: [0, 1, 11], 2: [4, 5, 8]}, {1: [1, 11, 0]}]  # class 2 absent from image 2 of pair 1
    anchors = (_anchor_tensor(groups1, 2, 3), _anchor_tensor(groups2, 2, 3))
    for divide_by in ("present", "all"):
        got = local_contrastive_loss(e1, e2, l1, l2, 3, temperature=0.1, anchors=anchors, divide_by=divide_by)
        want = _hand_loss(e1, e2, l1, l2, 3, 0.1, groups1, groups2, divide_by=divide_by)
        assert got.dtype == torch.float32 and torch.isfinite(got)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    # the reference's double normalisation, reachable by an argument
    got = local_contrastive_loss(e1, e2, l1, l2, 3, anchors=anchors, divide_by="all", cumulative=True)
    want = _hand_loss(e1, e2, l1, l2, 3, 0.1, groups1, groups2, cumulative_p=3)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    # every pixel of a class as anchor (num_anchors=None), another temperature
    all1 = [{c: torch.nonzero(l1[p].reshape(-1) == c).flatten().tolist() for c in (1, 2)} for p in range(2)]
    all2 = [{c: v for c in (1, 2) if (v := torch.nonzero(l2[p].reshape(-1) == c).flatten().tolist())} for p in range(2)]
    got = local_contrastive_loss(e1, e2, l1, l2, 3, temperature=0.5, num_anchors=None)
    assert float(got) == pytest.approx(float(_hand_loss(e1, e2, l1, l2, 3, 0.5, all1, all2)), rel=1e-5)
    # sampled anchors: the loss of the drawn anchors, reproducible with a seeded generator
    lcl = LocalContrastiveLoss(3, num_anchors=3)
    a = lcl(e1, e2, l1, l2, generator=torch.Generator().manual_seed(7))
    b = lcl(e1, e2, l1, l2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(7)
    drawn = (sample_anchors(l1, 3, 3, g), sample_anchors(l2, 3, 3, g))
    assert torch.equal(a, local_contrastive_loss(e1, e2, l1, l2, 3, anchors=drawn))


def test_perfect_clusters_give_the_lower_bound_and_the_loss_grows_with_spread():
    # class c of both images on its own orthogonal direction: s = 1/tau to its own means, 0 to the other class
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4, :4] = 1
    labels[:, 4:, 4:] = 2
    dirs = torch.eye(4)[:3]  # background, class 1, class 2
    base = dirs[labels].permute(0, 3, 1, 2)  # (1, 4, 8, 8)
    perfect = local_contrastive_loss(base, base.clone(), labels, labels, 3, num_anchors=None)
    # D = 2 e^10 + 2 e^0 and two positive terms per anchor: l = 2 log(2 + 2 e^-10)
    assert float(perfect) == pytest.approx(2 * math.log(2 + 2 * math.exp(-10)), rel=1e-6)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    values = [
        float(local_contrastive_loss(base + s * noise[:1], base + s * noise[1:], labels, labels, 3, num_anchors=None))
        for s in (0.05, 0.3, 1.0, 3.0)
    ]
    assert perfect < values[0] < values[1] < values[2] < values[3]
    # a quarter of the class-1 pixels of image 1 sit on the class-2 direction: far above the bound
    closer = base.clone()
    closer[:, :, :2, :2] = dirs[2].view(1, 4, 1, 1)
    assert float(local_contrastive_loss(closer, base, labels, labels, 3, num_anchors=None)) > float(perfect) + 0.5


def test_background_pixels_never_contribute():
    e1, e2, l1, l2 = _toy_pair_batch(1)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):  # background is never drawn as an anchor
        idx = sample_anchors(l1, 3, 4, g)
        hit = l1.reshape(2, -1).gather(1, idx.clamp(min=0).reshape(2, -1)).view_as(idx)
        assert bool(((hit == torch.arange(1, 3).view(1, 2, 1)) | (idx < 0)).all())
    f1, f2 = e1.clone(), e2.clone()
    f1.permute(0, 2, 3, 1)[l1 == 0] = 100.0 * torch.randn(int((l1 == 0).sum()), 3)
    f2.permute(0, 2, 3, 1)[l2 == 0] = -7.0
    for kwargs in ({"num_anchors": None}, {"num_anchors": 3, "divide_by": "all"}):
        a = local_contrastive_loss(e1, e2, l1, l2, 3, generator=torch.Generator().manual_seed(2), **kwargs)
        b = local_contrastive_loss(f1, f2, l1, l2, 3, generator=torch.Generator().manual_seed(2), **kwargs)
        assert torch.equal(a, b)
    # no gradient reaches a background pixel
    f1.requires_grad_(True)
    local_contrastive_loss(f1, f2, l1, l2, 3, num_anchors=None).backward()
    assert torch.equal(f1.grad.permute(0, 2, 3, 1)[l1 == 0], torch.zeros(int((l1 == 0).sum()), 3))
    assert f1.grad.permute(0, 2, 3, 1)[l1 > 0].abs().sum() > 0


def test_absent_classes_are_skipped_without_nan():
    e1, e2, l1, l2 = _toy_pair_batch(2)
    # a 4th class absent from every image changes nothing with the default normalisation
    a = local_contrastive_loss(e1, e2, l1, l2, 3, num_anchors=None)
    b = local_contrastive_loss(e1, e2, l1, l2, 4, num_anchors=None)
    assert torch.isfinite(b) and float(a) == pytest.approx(float(b), rel=1e-6)
    g = torch.Generator().manual_seed(1)
    drawn = [sample_anchors(lab, 3, 3, g) for lab in (l1, l2)]  # the same anchors, plus an empty class-3 row
    padded = [torch.cat([d, torch.full((2, 1, 3), -1)], dim=1) for d in drawn]
    a = local_contrastive_loss(e1, e2, l1, l2, 3, anchors=tuple(drawn))
    b = local_contrastive_loss(e1, e2, l1, l2, 4, anchors=tuple(padded))
    assert torch.isfinite(b) and float(a) == pytest.approx(float(b), rel=1e-6)
    assert bool((sample_anchors(l1, 4, 3, g)[:, 2] == -1).all())  # nothing drawn for the absent class
    # the reference's fixed divisor 2 (C - 1) counts the absent class as 0
    a = local_contrastive_loss(e1, e2, l1, l2, 3, num_anchors=None, divide_by="all")
    b = local_contrastive_loss(e1, e2, l1, l2, 4, num_anchors=None, divide_by="all")
    assert float(b) == pytest.approx(float(a) * 4 / 6, rel=1e-6)
    # class 2 only in image 1 of pair 1: finite, gradients finite (checked against the hand value in another test)
    x1 = e1.clone().requires_grad_(True)
    loss = local_contrastive_loss(x1, e2, l1, l2, 3, num_anchors=None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x1.grad).all()
    # no foreground class at all: a defined zero, attached to the graph, zero gradients
    bg = torch.zeros_like(l1)
    for divide_by in ("present", "all"):
        x1 = e1.clone().requires_grad_(True)
        loss = local_contrastive_loss(x1, e2, bg, bg, 3, divide_by=divide_by)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.equal(x1.grad, torch.zeros_like(x1))
    # a pair with no foreground is left out of the mean over pairs ("present")
    mixed = l1.clone()
    mixed[1] = 0
    l2b = l2.clone()
    l2b[1] = 0
    one = local_contrastive_loss(e1[:1], e2[:1], l1[:1], l2[:1], 3, num_anchors=None)
    both = local_contrastive_loss(e1, e2, mixed, l2b, 3, num_anchors=None)
    assert float(both) == pytest.approx(float(one), rel=1e-6)


def test_anchor_checks():
    _, _, l1, _ = _toy_pair_batch()
    bad = torch.full((2, 2, 1), -1, dtype=torch.long)
    bad[0, 0, 0] = 0  # pixel 0 is background
    with pytest.raises(ValueError, match="another class"):
        anchor_weights(bad, l1, 3)
    w = anchor_weights(torch.tensor([[[2, 2, 3], [-1, -1, -1]]] * 2), l1, 3)
    assert torch.allclose(w[0, 0, [2, 3]], torch.tensor([2 / 3, 1 / 3])) and float(w[0, 1].sum()) == 0.0
    with pytest.raises(ValueError, match="label values"):
        local_contrastive_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), l1, l1 + 1, 3)
    with pytest.raises(ValueError, match="cumulative"):
        LocalContrastiveLoss(3, divide_by="present", cumulative=True)


def test_contrastive_gradients_reach_h_and_the_backbone_but_not_g():
    torch.manual_seed(0)
    net = LocalContrastUNet(width=4)
    x = torch.randn(6, 1, 32, 32)
    labels = torch.zeros(6, 32, 32, dtype=torch.long)
    labels[:, 4:14, 4:14] = 1
    labels[:, 16:28, 10:30] = 2
    labels[:, 20:24, 2:8] = 3
    logits, emb = net.forward_train(x, seg_rows=slice(0, 2), embed_rows=slice(2, 6))
    loc = local_contrastive_loss(
        emb[:2], emb[2:], labels[2:4], labels[4:6], 4, generator=torch.Generator().manual_seed(0)
    )
    loc.backward()
    assert all(p.grad is None or not p.grad.any() for p in net.seg_head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.cont_head.parameters())
    assert net.encoder[0].a.conv.weight.grad.abs().sum() > 0 and net.decoder[4].dc.conv.weight.grad.abs().sum() > 0
    # and the segmentation loss does not reach h
    net.zero_grad(set_to_none=True)
    logits, emb = net.forward_train(x, seg_rows=slice(0, 2), embed_rows=slice(2, 6))
    SegmentationLoss(4)(logits, labels[:2]).backward()
    assert all(p.grad is None or not p.grad.any() for p in net.cont_head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.seg_head.parameters())


# ---------------------------------------------------------------------------------------------------------------
# segmentation loss and the joint objective


def test_segmentation_losses_match_the_reference_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    labels = torch.randint(0, 4, (2, 8, 8), generator=g)
    labels[1][labels[1] == 3] = 0  # a class absent from one image: its Dice is 2*0 / (sum p + eps)
    p = logits.softmax(dim=1).double()
    y = F.one_hot(labels, 4).permute(0, 3, 1, 2).double()
    dice = 2 * (p * y).sum(dim=(2, 3)) / (p.sum(dim=(2, 3)) + y.sum(dim=(2, 3)) + 1e-10)  # (B, C)
    assert float(SegmentationLoss(4)(logits, labels)) == pytest.approx(float(1 - dice.mean()), rel=1e-6)
    assert float(SegmentationLoss(4, "dice_fg")(logits, labels)) == pytest.approx(
        float(1 - dice[:, 1:].mean()), rel=1e-6
    )
    assert float(SegmentationLoss(4)(logits, labels.unsqueeze(1))) == pytest.approx(float(1 - dice.mean()), rel=1e-6)
    assert float(SegmentationLoss(4)(logits, y.float())) == pytest.approx(float(1 - dice.mean()), rel=1e-6)  # one-hot
    w = torch.tensor(default_class_weights(4), dtype=torch.float64)
    assert default_class_weights(4) == (0.1, 0.3, 0.3, 0.3)
    ce = -(y * logits.double().log_softmax(dim=1)).sum(dim=1)
    wce = (ce * w[labels]).mean()
    assert float(SegmentationLoss(4, "wce")(logits, labels)) == pytest.approx(float(wce), rel=1e-6)
    with pytest.raises(ValueError, match="mode"):
        SegmentationLoss(4, "focal")


def test_joint_loss_is_seg_plus_lambda_local():
    e1, e2, l1, l2 = _toy_pair_batch()
    logits = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    seg_labels = torch.randint(0, 3, (3, 4, 4), generator=torch.Generator().manual_seed(2))
    out = JointLoss(3)(logits, seg_labels, e1, e2, l1, l2, generator=torch.Generator().manual_seed(4))
    seg = SegmentationLoss(3)(logits, seg_labels)
    loc = LocalContrastiveLoss(3)(e1, e2, l1, l2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out["seg"], seg) and torch.equal(out["loc"], loc)
    assert float(out["lam"]) == pytest.approx(0.1)
    assert float(out["loss"]) == pytest.approx(float(seg + 0.1 * loc), rel=1e-6)


def test_a_few_sgd_steps_reduce_the_segmentation_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(4, 32, 32, dtype=torch.long)
    for i in range(4):  # three bright squares of different intensity at per-image positions
        o = 2 * i
        labels[i, 2 + o : 12 + o, 2:12] = 1
        labels[i, 16:26, 4 + o : 14 + o] = 2
        labels[i, 4:12, 18 + o : 26 + o] = 3
    x = (labels.float() / 3 + 0.05 * torch.randn(4, 32, 32, generator=g)).unsqueeze(1)
    net = LocalContrastUNet(width=4)
    loss_fn = SegmentationLoss(4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]
