# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""fp16 training (CUDA GPUs without bf16) goes through a loss scaler in both bundles.

CPU autocast runs float16 too, so ``amp_dtype="float16"`` on CPU exercises the very code path an fp16 GPU takes:
the trainer's ``GradScaler`` scales the loss, skips the update of a step whose gradients overflowed, and
``ResumeCheckpoint`` carries the loss scale across a restart.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
from conftest import import_bundle, squares
from ignite.engine import Events


def _trainer(bundle: str, amp_dtype: str | None, iterations: int):
    """A small 2D trainer of ``bundle`` (Switch with both stages; CrossMatch's supervised baseline) on squares.

    Returns the trainer, its network and the bundle's ``scripts.common.checkpoints``.
    """
    import_bundle(bundle)
    trainer_mod = importlib.import_module("scripts.trainer")
    networks = importlib.import_module("scripts.networks")
    torch.manual_seed(0)
    img, lab = squares(16)
    batches = [{"image": img[i : i + 4], "label": lab[i : i + 4], "unlabeled_image": img[(i + 8) % 16 : (i + 8) % 16 + 4]}
               for i in (0, 4, 8, 12)]
    common = {"device": "cpu", "max_epochs": 1, "epoch_length": iterations, "train_data_loader": itertools.cycle(batches),
              "amp": amp_dtype is not None, "amp_dtype": amp_dtype, "channels_last": False}
    if bundle == "switch_us":
        handlers = importlib.import_module("scripts.handlers")
        net = networks.UNet2D(features=(8, 16, 16, 32, 32), projector=True)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        teacher = handlers.EMATeacher(net)
        trainer = trainer_mod.SwitchTrainer(network=net, optimizer=opt, teacher=teacher, pretrain_iterations=iterations // 2,
                                            coarse_size=16, fine_size=4, num_classes=2,
                                            train_handlers=[teacher, handlers.FrequencyDomainSwitch(beta=0.1)], **common)
    else:
        net = networks.UNet2D(in_channels=1, out_channels=2, features=(8, 16, 16, 32, 32))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        trainer = trainer_mod.SupervisedBaselineTrainer(network=net, optimizer=opt, num_classes=2, **common)
    return trainer, net, importlib.import_module("scripts.common.checkpoints")


def _loss(engine) -> float:
    out = engine.state.output
    return float((out[0] if isinstance(out, list) else out)["loss"])


@pytest.mark.parametrize("bundle", ["crossmatch_3d", "switch_us"])
def test_fp16_trains_through_a_loss_scaler(bundle, restore_scripts):
    trainer, net, _ = _trainer(bundle, "float16", iterations=12)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.amp_dtype is torch.float16
    dtypes = []
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(_loss(e)))
    trainer.run()
    assert set(dtypes) == {torch.float16}  # the forward really ran in half precision
    assert all(p.dtype is torch.float32 for p in net.parameters())  # master weights stay fp32
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert type(trainer.scaler) is torch.amp.GradScaler and trainer.scaler.is_enabled()  # still the trainer's own
    assert trainer.scaler.get_scale() > 1.0
    # bf16 and fp32 need no loss scaling, before and after a run (MONAI's Trainer.run would add a CUDA one before the
    # engine starts, so a run stopped at its start tells; no iteration needs to run emulated bf16 on older CPUs)
    for dtype in ("bfloat16", None):
        other = _trainer(bundle, dtype, iterations=1)[0]
        assert other.scaler is None
        other.add_event_handler(Events.STARTED, lambda engine: engine.terminate())
        other.run()
        assert other.scaler is None and other.state.iteration == 0


@pytest.mark.parametrize("bundle", ["crossmatch_3d", "switch_us"])
def test_fp16_step_with_overflowing_gradients_is_skipped(bundle, restore_scripts):
    trainer, net, _ = _trainer(bundle, "float16", iterations=3)
    seen = {}

    def watch(engine):
        params = {n: p.detach().clone() for n, p in net.named_parameters()}
        seen[engine.state.iteration] = (params, engine.scaler.get_scale())
        if engine.state.iteration == 1:
            engine.scaler.update(new_scale=3.0e38)  # iteration 2's scaled gradients overflow
        elif engine.state.iteration == 2:
            engine.scaler.update(new_scale=1024.0)  # iteration 3 at an ordinary scale

    trainer.add_event_handler(Events.ITERATION_COMPLETED, watch)
    trainer.run()
    (p1, _), (p2, scale2), (p3, _) = seen[1], seen[2], seen[3]
    assert all(torch.equal(p1[n], p2[n]) for n in p1)  # the overflowing step was skipped
    assert scale2 < 3.0e38  # and the scale backed off
    assert any(not torch.equal(p2[n], p3[n]) for n in p2)  # then training went on


@pytest.mark.parametrize("bundle", ["crossmatch_3d", "switch_us"])
def test_resume_checkpoint_keeps_the_loss_scale(bundle, restore_scripts, tmp_path):
    trainer, net, checkpoints = _trainer(bundle, "float16", iterations=2)
    trainer.run()
    trainer.scaler.update(new_scale=1024.0)
    saver = checkpoints.ResumeCheckpoint(str(tmp_path), {"network": net, "optimizer": trainer.optimizer})
    saver.save(trainer)
    assert "grad_scaler" in torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    fresh, fresh_net, _ = _trainer(bundle, "float16", iterations=2)
    assert fresh.scaler.get_scale() == 65536.0
    checkpoints.ResumeCheckpoint(str(tmp_path), {"network": fresh_net, "optimizer": fresh.optimizer}).resume(fresh)
    assert fresh.scaler.get_scale() == 1024.0
    # an fp32 run neither writes nor needs a scaler state
    fp32, fp32_net, _ = _trainer(bundle, None, iterations=2)
    checkpoints.ResumeCheckpoint(str(tmp_path / "fp32"), {"network": fp32_net}).save(fp32)
    assert "grad_scaler" not in torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=False)
