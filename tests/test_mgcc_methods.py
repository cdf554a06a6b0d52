# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The maths of MGCC: network, perturbations, losses and ramp (ALGORITHMS.md 3.1, 3.3, 3.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import import_bundle, squares

import_bundle("mgcc_us")
from scripts.losses import BCEDiceLoss, MGCCLoss, SigmoidRamp, consistency_loss  # noqa: E402
from scripts.networks import (  # noqa: E402
    ElementDropout,
    FeatureDropout,
    FeatureNoise,
    MGCCInferenceNet,
    MGCCNet,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return k * k * cin // groups * cout + cout  # weights + bias


def _bn(c: int) -> int:
    return 2 * c


def _conv_block(cin: int, cout: int) -> int:
    return _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3) + _bn(cout)


def _msag(c: int) -> int:
    return _conv(c, c, 1) + _conv(c, c, 3) + _conv(c, c, 3) + 3 * _bn(c) + _conv(3 * c, c, 1) + _bn(c)


def _hand_counts(in_channels: int, width: int = 64, depth: int = 3) -> dict[str, int]:
    w = [width * m for m in (1, 2, 4, 8, 16)]
    encoder = sum(_conv_block(([in_channels, *w])[i], w[i]) for i in range(5))
    mixer = depth * (_conv(w[4], w[4], 7, groups=w[4]) + _bn(w[4]) + _conv(w[4], w[4], 1) + _bn(w[4]))
    decoder = sum(_msag(w[i]) + _conv(w[i + 1], w[i], 3) + _bn(w[i]) + _conv_block(2 * w[i], w[i]) for i in range(4))
    decoder += _conv(w[0], 1, 1)
    return {
        "encoder": encoder,
        "mixer": mixer,
        "decoder": decoder,
        "total": encoder + 3 * mixer + 4 * decoder,
        "inference": encoder + 3 * mixer + decoder,
    }


@pytest.mark.parametrize("in_channels", [3, 1])
def test_parameter_counts_match_the_spec(in_channels):
    hand = _hand_counts(in_channels)
    with torch.device("meta"):  # no memory, no initialisation cost
        net = MGCCNet(in_channels=in_channels, width=64)
        inference = net.inference_network()
    measured = {
        "encoder": _count(net.encoder),
        "mixer": _count(net.mixers[0]),
        "decoder": _count(net.main_decoder),
        "total": _count(net),
        "inference": _count(inference),
    }
    assert measured == hand
    assert all(_count(m) == hand["mixer"] for m in net.mixers)
    assert all(_count(d) == hand["decoder"] for d in net.aux_decoders)
    # ALGORITHMS.md 3.1 (3 input channels): 18.85M, 3.31M, 23.35M, 122.18M, 52.14M; one grey channel rounds alike
    spec = {"encoder": 18.85, "mixer": 3.31, "decoder": 23.35, "total": 122.18, "inference": 52.14}
    assert {k: round(v / 1e6, 2) for k, v in measured.items()} == spec
    if in_channels == 3:
        assert measured["total"] == 122_182_980 and measured["inference"] == 52_142_145


def test_feature_dropout_zeroes_exactly_the_positions_above_gamma_max():
    a = (torch.randperm(100, generator=torch.Generator().manual_seed(1)).double() + 1) / 100  # 0.01 .. 1.00
    a = a.view(1, 1, 10, 10)
    sample = torch.cat([0.5 * a, a, 1.5 * a], dim=1)  # channel mean = a
    x = torch.cat([sample, 2 * sample])  # same pattern, different maximum
    out = FeatureDropout()(x, torch.Generator().manual_seed(0))
    # the draw for seed 0, by hand: gamma ~ U(0.7, 0.9) in float64 from the same generator
    gamma = 0.7 + 0.2 * float(torch.rand((), dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert 0.7 <= gamma <= 0.9
    zeroed = (out == 0).all(dim=1)  # (B, H, W), positions zeroed in every channel
    assert torch.equal(zeroed[0], zeroed[1])  # gamma is shared by the batch
    assert torch.equal(zeroed[0], a[0, 0] >= gamma)
    expected_zeroed = 100 - math.ceil(100 * gamma) + 1  # values i/100 >= gamma, i = 1..100
    assert int(zeroed[0].sum()) == expected_zeroed
    kept = ~zeroed.unsqueeze(1).expand_as(x)
    assert torch.equal(out[kept], x[kept])  # survivors untouched
    # the threshold implied by the zeroed set stays within [0.7, 0.9] for any draw; numpy's RNG is not used
    np_state = np.random.get_state()[1].copy()
    for seed in range(20):
        torch.manual_seed(seed)
        z = (FeatureDropout()(x) == 0).all(dim=1)[0]
        assert 0.7 - 1e-9 <= float(a[0, 0][z].min()) and float(a[0, 0][~z].max()) < 0.9
        assert 10 <= int(z.sum()) <= 31
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_dropout_rate_and_rescaling():
    x = torch.ones(4, 8, 64, 64)
    for out in (ElementDropout()(x), ElementDropout()(x, torch.Generator().manual_seed(0))):
        frac = float((out == 0).float().mean())
        assert abs(frac - 0.3) < 0.01
        assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))
    assert torch.equal(
        ElementDropout()(x, torch.Generator().manual_seed(5)), ElementDropout()(x, torch.Generator().manual_seed(5))
    )
    drop = ElementDropout().eval()  # always active, as the reference's helper
    assert (drop(x) == 0).any()


def test_feature_noise_range_and_sharing():
    x = torch.rand(3, 4, 32, 32, generator=torch.Generator().manual_seed(2)) + 0.5
    out = FeatureNoise()(x, torch.Generator().manual_seed(0))
    n = (out - x) / x
    assert float(n.min()) >= -0.3 - 1e-6 and float(n.max()) <= 0.3 + 1e-6
    assert float(n.min()) < -0.29 and float(n.max()) > 0.29 and abs(float(n.mean())) < 0.01  # spread over the range
    assert torch.allclose(n[0], n[1], atol=1e-6) and torch.allclose(n[0], n[2], atol=1e-6)  # shared by the batch
    assert not torch.allclose(n[0, 0], n[0, 1])  # but one draw per channel and position


def test_sigmoid_ramp_values():
    ramp = SigmoidRamp()  # w_max 7, 150 iterations per ramp epoch, 200 ramp epochs
    assert ramp(0) == pytest.approx(7 * math.exp(-5))
    assert ramp(149) == pytest.approx(7 * math.exp(-5))
    assert ramp(150) == pytest.approx(7 * math.exp(-5 * (199 / 200) ** 2))
    assert ramp(15000) == pytest.approx(7 * math.exp(-1.25))  # epoch 100: phase 0.5
    assert ramp(20000) == pytest.approx(7 * math.exp(-5 * (67 / 200) ** 2))  # epoch 133: about 4
    assert 3.9 < ramp(20000) < 4.1
    assert ramp(30000) == pytest.approx(7.0)
    assert ramp(40000) == pytest.approx(7.0)
    assert SigmoidRamp(w_max=2.0, ramp_epochs=0)(0) == 2.0


def test_consistency_loss_values_and_gradients():
    main = torch.zeros(2, 1, 4, 4, requires_grad=True)
    assert float(consistency_loss(main, [main.detach().clone(), main.detach().clone()]).detach()) == 0.0
    aux1 = torch.full((2, 1, 4, 4), math.log(3.0), requires_grad=True)  # sigmoid 0.75
    aux2 = torch.zeros(2, 1, 4, 4, requires_grad=True)  # sigmoid 0.5
    loss = consistency_loss(main, [aux1, aux2])
    assert float(loss.detach()) == pytest.approx((0.25**2 + 0.0) / 2)
    loss.backward()
    # no stop-gradient: the main and the differing auxiliary output both receive gradient
    # d/dm = (s_m - s_1) s'(m) / N and d/da1 = -(s_m - s_1) s'(a1) / N, N = 32 elements (aux2 adds nothing)
    assert torch.allclose(main.grad, torch.full_like(main, -0.25 * 0.25 / 32))
    assert torch.allclose(aux1.grad, torch.full_like(aux1, 0.25 * 0.75 * 0.25 / 32))
    assert torch.count_nonzero(aux2.grad) == 0


def test_bce_dice_matches_a_hand_computation():
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, 0.0]]], [[[ln3, -ln3]]]])  # sigmoid [0.5, 0.5] and [0.75, 0.25]
    target = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    eps = 1e-5
    bce = (2 * math.log(2) + math.log(4 / 3) + math.log(4)) / 4
    dice = ((2 * 0.5 + eps) / (1.0 + 1.0 + eps) + (2 * 1.0 + eps) / (1.0 + 2.0 + eps)) / 2
    assert float(BCEDiceLoss()(logits, target)) == pytest.approx(0.5 * bce + 1 - dice, rel=1e-6)


def test_mgcc_loss_composition():
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(4, 1, 8, 8, generator=g) for _ in range(4)]
    labels = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    crit = MGCCLoss()
    parts = crit(outs, labels, num_labelled=2, iteration=15000)
    sup = sum(BCEDiceLoss()(o[:2], labels[:2]) for o in outs) / 4
    cons = consistency_loss(outs[0][2:], [o[2:] for o in outs[1:]])
    w = 7 * math.exp(-1.25)
    assert float(parts["sup"]) == pytest.approx(float(sup), rel=1e-6)
    assert float(parts["cons"]) == pytest.approx(float(cons), rel=1e-6)
    assert float(parts["cons_weight"]) == pytest.approx(w, rel=1e-6)
    assert float(parts["loss"]) == pytest.approx(float(sup) + w * float(cons), rel=1e-6)
    assert float(parts["sup_aux2"]) == pytest.approx(float(BCEDiceLoss()(outs[2][:2], labels[:2])), rel=1e-6)
    # labels of the labelled part only give the same; the labelled part of the batch does not enter Lcons
    assert float(crit(outs, labels[:2], 2, 15000)["loss"]) == pytest.approx(float(parts["loss"]), rel=1e-6)
    changed = [outs[0], *[torch.cat([o[:2] + 1.0, o[2:]]) for o in outs[1:]]]
    assert float(crit(changed, labels, 2, 15000)["cons"]) == pytest.approx(float(cons), rel=1e-6)
    on_all = MGCCLoss(consistency_on="all")(outs, labels, 2, 15000)
    assert float(on_all["cons"]) == pytest.approx(float(consistency_loss(outs[0], outs[1:])), rel=1e-6)


def test_training_forward_is_multi_level_and_seeded():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    net = MGCCNet(width=4, out_channels=2).train()
    net.generator = torch.Generator().manual_seed(3)
    outs = net(x)
    assert isinstance(outs, tuple) and len(outs) == 4
    assert all(o.shape == (2, 2, 32, 32) for o in outs)
    net.generator = torch.Generator().manual_seed(3)
    again = net(x)
    assert all(torch.equal(a, b) for a, b in zip(outs, again))  # torch generator only, reproducible
    assert all(not torch.allclose(outs[0], o) for o in outs[1:])
    # with neutral perturbations and the main decoder's weights in every aux decoder, aux k is the main decoder
    # applied to the bottleneck after k - 1 mixers (aux1: raw x5)
    net = MGCCNet(width=4, feature_dropout_range=(2.0, 2.0), dropout_p=0.0, noise_range=(0.0, 0.0)).train()
    for dec in net.aux_decoders:
        dec.load_state_dict(net.main_decoder.state_dict())
    with torch.no_grad():
        main, *aux = net(x)
        feats = net.encoder(x)
        x5 = feats[4]
        for k in range(3):
            assert torch.allclose(aux[k], net.main_decoder([*feats[:4], x5]), atol=1e-5)
            x5 = net.mixers[k](x5)
        assert torch.allclose(main, net.main_decoder([*feats[:4], x5]), atol=1e-5)


def test_eval_path_ignores_the_aux_decoders_and_exports():
    torch.manual_seed(0)
    net = MGCCNet(width=4)
    x = torch.rand(2, 1, 32, 32)
    net.train()
    net(x)  # move the BN running statistics away from their initial values
    net.eval()
    with torch.no_grad():
        ref = net(x)
        assert isinstance(ref, torch.Tensor) and ref.shape == (2, 1, 32, 32)
        for p in net.aux_decoders.parameters():
            p.add_(torch.randn_like(p))
        for buf in net.aux_decoders.buffers():
            if buf.is_floating_point():
                buf.mul_(3.0)
        assert torch.equal(net(x), ref)
        inference = net.inference_network()
        assert _count(inference) == _count(net) - _count(net.aux_decoders)
        assert not inference.training and torch.equal(inference(x), ref)
        scripted = torch.jit.script(inference)
        assert torch.allclose(scripted(x), ref, atol=1e-6)
        # a full MGCCNet state dict loads strictly into the inference network
        fresh = MGCCInferenceNet(width=4).eval()
        fresh.load_state_dict(net.state_dict(), strict=True)
        assert torch.equal(fresh(x), ref)


def test_a_few_sgd_steps_reduce_the_loss():
    """The reference optimiser (SGD 0.01, momentum 0.9, wd 1e-4) at full consistency weight, fixed draws."""
    torch.manual_seed(0)
    img, lab = squares(8, size=32, seed=1)
    net = MGCCNet(width=8).train()
    crit = MGCCLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def loss_at(step: int) -> torch.Tensor:
        net.generator = torch.Generator().manual_seed(0)  # the same perturbations for every measurement
        return crit(net(img), lab, num_labelled=4, iteration=step)

    with torch.no_grad():
        before = loss_at(30000)
    for _ in range(15):
        parts = loss_at(30000)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = loss_at(30000)
    assert float(after["loss"]) < 0.8 * float(before["loss"])
    assert float(after["sup"]) < float(before["sup"])
