# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The MGCC generation stage (bundles/mgcc_us/scripts/generation.py): networks, LDM training with resume,
repeatable DDIM sampling into a datalist copy, the input checks, and the grid + feature distance, at 32 px."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import import_bundle
from PIL import Image

import_bundle("mgcc_us")
from scripts import generation as gen  # noqa: E402

SIZE = 32


def tiny_autoencoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return gen.autoencoder("demo", channels=(8, 8), latent_channels=2, num_res_blocks=1, norm_num_groups=4)


def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return gen.diffusion_unet("demo", latent_channels=2, channels=(8, 16), attention_levels=(False, False),
                              num_res_blocks=1, norm_num_groups=4, num_head_channels=8)


def _speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A bright disc on a speckled background, in [0, 1]."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float64)
    return np.clip(0.2 + 0.5 * disc + 0.15 * rng.standard_normal((h, w)), 0.0, 1.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: its networks are so small that a second thread only adds synchronisation
    (the file runs 5x slower with two threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A prepared dataset: 4 labelled + 3 unlabelled images (8-bit grey, RGB, 16-bit, one 40 x 36), validation and
    test items pointing at files that do not exist (the trainers must never read them)."""
    root = tmp_path_factory.mktemp("us")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    labeled, unlabeled = [], []
    for i in range(7):
        h, w = (40, 36) if i == 5 else (SIZE, SIZE)
        img = _speckle(rng, h, w)
        name = f"images/case{i}.png"
        if i == 1:  # RGB-encoded grey
            Image.fromarray(np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=-1)).save(root / name)
        elif i == 2:  # 16-bit
            Image.fromarray((img * 65535).astype(np.uint16)).save(root / name)
        else:
            Image.fromarray((img * 255).astype(np.uint8)).save(root / name)
        if i < 4:
            Image.fromarray((img > 0.5).astype(np.uint8)).save(root / f"labels/case{i}.png")
            labeled.append({"image": name, "label": f"labels/case{i}.png"})
        else:
            unlabeled.append({"image": name})
    datalist = {"labeled": labeled, "unlabeled": unlabeled,
                "validation": [{"image": "images/missing_val.png", "label": "labels/missing_val.png"}],
                "test": [{"image": "images/missing_test.png", "label": "labels/missing_test.png"}]}
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> dict:
    """A tiny autoencoder (40 iterations) and diffusion model (12 iterations) trained on ``dataset``."""
    models = tmp_path_factory.mktemp("models")
    ae = gen.train_autoencoder(tiny_autoencoder(), dataset, models / "autoencoder.pt", image_size=SIZE, iterations=40,
                               batch_size=4, lr=3e-3, seed=0, log_interval=10, save_interval=20)
    dm = gen.train_diffusion(tiny_unet(), tiny_autoencoder(), models / "autoencoder.pt", dataset,
                             models / "diffusion.pt", image_size=SIZE, iterations=12, batch_size=4, lr=1e-3,
                             num_train_timesteps=100, seed=0, log_interval=4, save_interval=100)
    return {"models": models, "ae": ae, "dm": dm}


def test_presets_build_the_published_and_demo_networks():
    ae = gen.autoencoder("demo")
    z_mu, _ = ae.encode(torch.rand(1, 1, 64, 64))
    assert gen.preset_image_size("demo") == 64 and tuple(z_mu.shape) == (1, 4, 16, 16)
    unet = gen.diffusion_unet("demo")
    assert unet(torch.randn(1, 4, 16, 16), timesteps=torch.tensor([3])).shape == (1, 4, 16, 16)
    pub_ae, pub_unet = gen.autoencoder(), gen.diffusion_unet()
    assert gen.preset_image_size() == 256
    assert pub_ae.latent_channels == pub_unet.in_channels == 8 and len(pub_ae.encoder.channels) == 4  # 256 -> 32
    with pytest.raises(gen.ConfigValueError, match="unknown network preset 'huge'"):
        gen.autoencoder("huge")


def test_images_of_any_depth_and_size_are_read_grey_in_unit_range(dataset):
    for i in range(7):
        x = gen.read_image(dataset / f"images/case{i}.png", SIZE)
        assert x.shape == (1, SIZE, SIZE) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    paths = gen.training_image_paths(dataset)
    assert len(paths) == 7 and not any("missing" in p.name for p in paths)
    with pytest.raises(gen.DataError, match="not found"):
        gen.read_image(dataset / "images/missing_val.png", SIZE)


def test_autoencoder_loss_decreases_and_training_skips_validation_and_test(trained, dataset):
    losses = trained["ae"]["losses"]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    state = torch.load(trained["models"] / "autoencoder.pt", weights_only=True)
    assert state["iteration"] == 40 and {"model", "optimizer", "rng", "settings"} <= set(state)
    assert not (dataset / "images/missing_val.png").exists()  # validation/test files are absent: never read


def test_diffusion_training_writes_its_checkpoint(trained):
    state = torch.load(trained["models"] / "diffusion.pt", weights_only=True)
    assert state["iteration"] == 12 and len(trained["dm"]["losses"]) == 12
    assert state["latent_shape"] == [2, 16, 16] and np.isfinite(state["scale_factor"]) and state["scale_factor"] > 0
    assert state["schedule"]["num_train_timesteps"] == 100
    assert all(np.isfinite(trained["dm"]["losses"]))


def test_killed_diffusion_run_resumes_where_it_stopped(trained, dataset, tmp_path, caplog):
    ae_ckpt = trained["models"] / "autoencoder.pt"
    kwargs = {"image_size": SIZE, "batch_size": 4, "lr": 1e-3, "num_train_timesteps": 100, "seed": 3,
              "log_interval": 1, "save_interval": 100}
    ckpt = tmp_path / "diffusion.pt"
    first = gen.train_diffusion(tiny_unet(), tiny_autoencoder(), ae_ckpt, dataset, ckpt, iterations=3, **kwargs)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 3 and len(first["losses"]) == 3
    with caplog.at_level(logging.INFO, logger=gen.__name__):
        second = gen.train_diffusion(tiny_unet(), tiny_autoencoder(), ae_ckpt, dataset, ckpt, iterations=6, **kwargs)
    assert len(second["losses"]) == 3  # iterations 4..6 only: it did not start over
    assert torch.load(ckpt, weights_only=True)["iteration"] == 6
    assert "resumed from" in caplog.text and "at iteration 3/6" in caplog.text
    assert "diffusion iteration 6/6 (100.0%) loss" in caplog.text and "s/it, ETA" in caplog.text
    # the resumed run is the uninterrupted one: same batches, noise and weights
    whole = gen.train_diffusion(tiny_unet(), tiny_autoencoder(), ae_ckpt, dataset, tmp_path / "whole.pt",
                                iterations=6, **kwargs)
    assert np.allclose(whole["losses"], first["losses"] + second["losses"], rtol=1e-5, atol=1e-7)
    a, b = (torch.load(p, weights_only=True)["model"] for p in (ckpt, tmp_path / "whole.pt"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a finished run returns at once; changed settings are refused instead of resumed
    assert gen.train_diffusion(tiny_unet(), tiny_autoencoder(), ae_ckpt, dataset, ckpt, iterations=6,
                               **kwargs)["losses"] == []
    with pytest.raises(gen.ConfigValueError, match="other settings .*seed 3 -> 4"):
        gen.train_diffusion(tiny_unet(), tiny_autoencoder(), ae_ckpt, dataset, ckpt, iterations=9,
                            **{**kwargs, "seed": 4})


def test_autoencoder_resumes_with_its_adversarial_term(dataset, tmp_path):
    ckpt = tmp_path / "ae.pt"
    kwargs = {"image_size": SIZE, "batch_size": 4, "lr": 1e-3, "adversarial_weight": 0.1, "adversarial_start": 1}
    gen.train_autoencoder(tiny_autoencoder(), dataset, ckpt, iterations=2, **kwargs)
    out = gen.train_autoencoder(tiny_autoencoder(), dataset, ckpt, iterations=3, **kwargs)
    state = torch.load(ckpt, weights_only=True)
    assert len(out["losses"]) == 1 and state["iteration"] == 3 and "discriminator" in state


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sampling_is_repeatable_and_writes_a_datalist_copy(trained, dataset, tmp_path):
    models = trained["models"]
    original = (dataset / "datalist.json").read_bytes()

    def sample(out: Path, seed: int = 7, datalist: Path | None = None) -> dict:
        return gen.sample_images(tiny_autoencoder(), tiny_unet(), models / "autoencoder.pt", models / "diffusion.pt",
                                 dataset, num_samples=5, output_dir=out, output_datalist=datalist,
                                 num_inference_steps=3, batch_size=4, seed=seed)

    first = sample(dataset / "synthetic")
    second = sample(tmp_path / "again", datalist=tmp_path / "copy.json")
    names = sorted(Path(p).name for p in first["images"])
    assert len(names) == 5
    for name in names:
        assert (dataset / "synthetic" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
        with Image.open(dataset / "synthetic" / name) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)
    other = sample(tmp_path / "other", seed=8, datalist=tmp_path / "copy8.json")
    assert any(Path(a).read_bytes() != Path(b).read_bytes() for a, b in zip(first["images"], other["images"]))

    assert (dataset / "datalist.json").read_bytes() == original
    copy = json.loads((dataset / "datalist_synthetic.json").read_text())
    assert copy["synthetic"] == [{"image": f"synthetic/{n}"} for n in names]
    assert all((dataset / item["image"]).is_file() for item in copy["synthetic"])
    assert {k: v for k, v in copy.items() if k != "synthetic"} == json.loads(original)
    # a copy in another folder: its images relative to that folder, the dataset's files by absolute paths
    outside = json.loads(Path(second["datalist"]).read_text())
    assert outside["synthetic"][0] == {"image": f"again/{names[0]}"}
    assert all((tmp_path / it["image"]).is_file() for it in outside["synthetic"])
    assert all(Path(it["image"]).is_absolute() and Path(it["image"]).is_file() for it in outside["labeled"])
    # sampling again into its own folder replaces it
    again = sample(dataset / "synthetic")
    assert [Path(p).read_bytes() for p in again["images"]] == [Path(p).read_bytes() for p in first["images"]]


def test_sampling_refuses_bad_requests_and_writes_nothing(trained, dataset, tmp_path):
    models = trained["models"]
    empty = tmp_path / "empty_datalist"
    empty.mkdir()
    (empty / "datalist.json").write_text(json.dumps({"labeled": [], "unlabeled": [], "validation": [], "test": []}))
    a_file = tmp_path / "not_a_folder.png"
    a_file.write_bytes(b"x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        ({"dataset_dir": dataset, "num_samples": 0}, gen.ConfigValueError, "num_samples must be a positive"),
        ({"dataset_dir": dataset, "num_samples": -3}, gen.ConfigValueError, "num_samples must be a positive"),
        ({"dataset_dir": empty}, gen.DataError, "has no training images"),
        ({"dataset_dir": dataset, "output_dir": a_file}, gen.ConfigValueError, "is a file, not a folder"),
        ({"dataset_dir": dataset, "output_dir": a_file / "sub"}, gen.ConfigValueError, "is a file, not a folder"),
        ({"dataset_dir": dataset, "output_dir": foreign}, gen.ConfigValueError, "not a previous sampling"),
        ({"dataset_dir": dataset, "output_datalist": dataset / "datalist.json"}, gen.ConfigValueError,
         "never overwritten"),
    ]
    before = {d: _listing(d) for d in (dataset, empty, tmp_path)}
    for kwargs, error, message in cases:
        kwargs = {"num_samples": 2, "output_dir": tmp_path / "out", **kwargs}
        with pytest.raises(error, match=message) as info:
            gen.sample_images(tiny_autoencoder(), tiny_unet(), models / "autoencoder.pt", models / "diffusion.pt",
                              num_inference_steps=2, **kwargs)
        assert "\n" not in str(info.value)
    assert {d: _listing(d) for d in (dataset, empty, tmp_path)} == before
    assert not (tmp_path / "out").exists()


def test_distance_is_zero_for_identical_sets_and_grows_for_noise(dataset):
    real = torch.stack([gen.read_image(p, SIZE) for p in gen.training_image_paths(dataset)])
    same = gen.feature_distance(real, real.clone())
    noise = gen.feature_distance(real, torch.rand(len(real), 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    assert same < 1e-4 and noise > 1000 * max(same, 1e-6)
    assert gen.feature_distance(real, real.flip(0)) < 1e-4  # order does not matter
    # the feature network is fixed by its seed
    assert torch.equal(gen.RandomFeatures(5)(real), gen.RandomFeatures(5)(real))
    with pytest.raises(gen.DataError, match="at least two images"):
        gen.feature_distance(real[:1], real)


def test_evaluation_writes_the_grid_and_the_distance(trained, dataset, tmp_path):
    models = trained["models"]
    out = gen.sample_images(tiny_autoencoder(), tiny_unet(), models / "autoencoder.pt", models / "diffusion.pt",
                            dataset, num_samples=4, output_dir=tmp_path / "synthetic",
                            output_datalist=tmp_path / "datalist_synthetic.json", num_inference_steps=2)
    record = gen.evaluate_samples(dataset, out["datalist"], image_size=SIZE, columns=4)
    grid, saved = Path(record["grid"]), json.loads(Path(record["json"]).read_text())
    assert grid.parent == tmp_path / "synthetic" and Path(record["json"]).parent == grid.parent
    with Image.open(grid) as im:
        assert im.mode == "L" and im.size == (4 * SIZE + 5 * 2, 2 * SIZE + 3 * 2)
    assert saved["frechet_distance"] == record["frechet_distance"] >= 0
    assert saved["num_real"] == 7 and saved["num_generated"] == 4 and "RandomFeatures" in saved["feature_network"]
