# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""``scripts.common.checkpoints.WeightsLoader`` of the bundles: the test and inference workflows' weight loading."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import import_bundle
from ignite.engine import Engine


def _bundle(name: str):
    scripts = import_bundle(name)
    for module in ("common.checkpoints", "networks"):
        importlib.import_module(f"scripts.{module}")
    return scripts


def _engine() -> Engine:
    return Engine(lambda engine, batch: None)


NETWORKS = {  # each bundle's network with ``c`` classes (small where the bundle lets it be)
    "switch_us": lambda scripts, c: scripts.networks.UNet2D(1, c, projector=False),
    "crossmatch_3d": lambda scripts, c: scripts.networks.UNet2D(1, c),
    "localcontrast_2d": lambda scripts, c: scripts.networks.LocalContrastUNet(1, c, width=4),
}


def test_switch_baseline_weights_load_into_the_projector_network_and_back(tmp_path):
    scripts = _bundle("switch_us")
    UNet2D, WeightsLoader = scripts.networks.UNet2D, scripts.common.checkpoints.WeightsLoader
    torch.manual_seed(0)
    baseline = UNet2D(1, 2, projector=False)
    path = tmp_path / "bcp.pt"
    torch.save({"model": baseline.state_dict()}, path)

    switch = UNet2D(1, 2, projector=True)
    projector_before = {k: v.clone() for k, v in switch.projector.state_dict().items()}
    engine = _engine()
    WeightsLoader(path, switch, optional_prefixes=["projector."]).attach(engine)
    engine.run([0], max_epochs=1)  # loads at Events.STARTED
    for k, v in baseline.state_dict().items():
        assert torch.equal(switch.state_dict()[k], v), k
    for k, v in switch.projector.state_dict().items():
        assert torch.equal(v, projector_before[k]), k  # left as built
    x = torch.rand(1, 1, 64, 64)
    baseline.eval(), switch.eval()
    assert torch.equal(baseline(x), switch(x))

    # and a Switch checkpoint (with its projector) into a baseline network; a bare state dict is accepted too
    torch.save(switch.state_dict(), path)
    other = UNet2D(1, 2, projector=False)
    WeightsLoader(path, other, optional_prefixes=["projector."])()
    other.eval()
    assert torch.equal(other(x), switch(x))


def test_switch_projector_keys_are_strict_without_optional_prefixes(tmp_path):
    scripts = _bundle("switch_us")
    path = tmp_path / "bcp.pt"
    torch.save({"model": scripts.networks.UNet2D(1, 2, projector=False).state_dict()}, path)
    with pytest.raises(ValueError, match=r"missing 16 \(projector\.0\.weight"):
        scripts.common.checkpoints.WeightsLoader(path, scripts.networks.UNet2D(1, 2, projector=True))()


@pytest.mark.parametrize("name", list(NETWORKS))
def test_bad_weights_stop_with_errors_that_name_the_problem(name, tmp_path):
    scripts = _bundle(name)
    loader = scripts.common.checkpoints.WeightsLoader
    net = NETWORKS[name](scripts, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    with pytest.raises(FileNotFoundError, match=r"no weights at ckpt_path = .*missing\.pt.*--ckpt_path"):
        loader(tmp_path / "missing.pt", net)()

    not_torch = tmp_path / "notes.pt"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch weights file"):
        loader(not_torch, net)()

    no_model = tmp_path / "optimizer.pt"
    torch.save({"optimizer": {"lr": 0.1}}, no_model)
    with pytest.raises(ValueError, match="holds no model weights"):
        loader(no_model, net)()

    two_classes = tmp_path / "two_classes.pt"
    other = NETWORKS[name](scripts, 2)
    torch.save({"model": other.state_dict()}, two_classes)
    with pytest.raises(ValueError, match=r"shape mismatches \(checkpoint vs network\) \d+ .*\(2, .*vs \(4, .*num_classes"):
        loader(two_classes, net)()

    for k, v in net.state_dict().items():  # nothing was half-loaded
        assert torch.equal(v, before[k]), k


def test_crossmatch_weights_round_trip(tmp_path):
    scripts = _bundle("crossmatch_3d")
    torch.manual_seed(0)
    trained, fresh = scripts.networks.UNet2D(1, 4), scripts.networks.UNet2D(1, 4)
    path = tmp_path / "model.pt"
    torch.save({"model": trained.state_dict()}, path)
    engine = _engine()
    scripts.common.checkpoints.WeightsLoader(path, fresh).attach(engine)
    engine.run([0], max_epochs=1)
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_localcontrast_weights_round_trip_with_the_heads_reset(tmp_path):
    """The published model (heads re-initialised after step 1, then trained) loads whole into the inference network."""
    scripts = _bundle("localcontrast_2d")
    torch.manual_seed(0)
    trained, fresh = scripts.networks.LocalContrastUNet(1, 4, width=4), scripts.networks.LocalContrastUNet(1, 4, width=4)
    trained.reset_heads(torch.Generator().manual_seed(1))
    path = tmp_path / "model.pt"
    torch.save(scripts.common.checkpoints.model_record(trained, {"bundle": "localcontrast_2d"}), path)
    engine = _engine()
    scripts.common.checkpoints.WeightsLoader(path, fresh).attach(engine)
    engine.run([0], max_epochs=1)
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    trained.eval(), fresh.eval()
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(trained(x), fresh(x))
