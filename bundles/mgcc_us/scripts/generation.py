# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The generation stage of MGCC: a latent diffusion model (LDM) that makes unlabelled ultrasound images.

MGCC trains its segmenter on a few labelled images plus unlabelled images that an LDM generated from the
training images (ALGORITHMS.md 3.2 and 3.6.2: the reference took them from an external medfusion run). This
module is that stage, built only from MONAI's generative pieces (``AutoencoderKL``, ``DiffusionModelUNet``,
``DDPMScheduler``/``DDIMScheduler``, ``LatentDiffusionInferer``, ``FIDMetric``), as a plain Python API whose
pieces a bundle config instantiates one by one:

1. :func:`autoencoder` and :func:`diffusion_unet`: the networks, 2D and one grey channel, at the ``published``
   size (256 x 256 images, a medfusion-like 8-channel latent at 1/8 resolution, 32 x 32 x 8) or the ``demo`` size
   (64 x 64 images, a 4-channel latent at 1/4 resolution, trains in minutes on a laptop CPU); every size is an
   argument that overrides the preset.
2. :func:`train_autoencoder` (L1 reconstruction + KL, optional patch-adversarial term) and :func:`train_diffusion`
   (noise-prediction MSE in the latent space of the frozen autoencoder, latents scaled to unit standard deviation)
   on the datalist's training images only (``labeled`` + ``unlabeled``; ``validation`` and ``test`` are never
   read). Both run a fixed number of iterations from a seed, log progress lines with speed and ETA, write their
   checkpoint atomically every ``save_interval`` iterations and at the end, and resume from it when it exists:
   killing a run and starting the same command again continues where it stopped, with the same batches.
3. :func:`sample_images`: DDIM sampling of N images, repeatable from a seed, written as 8-bit grey PNGs with a copy
   of the datalist that adds a ``synthetic`` list (the original datalist is never written).
4. :func:`evaluate_samples`: a grid of real and generated images and a Frechet distance between their features
   under a fixed, seeded, untrained CNN (:class:`RandomFeatures`).

Images are read grey (colour channels averaged, alpha dropped, as the segmenter reads them), scaled to [0, 1] by
the range their values show (8-bit /255, 16-bit /65535, as the bundles' ``scale_to_unit``) and resized to the
model size (area interpolation), so a dataset of mixed sizes and bit depths trains as one.

MONAI's ``DiffusionModelUNet`` always has a self-attention block, which needs the ``einops`` package
(``monai[einops]``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import LatentDiffusionInferer
from monai.losses import PatchAdversarialLoss
from monai.metrics import FIDMetric
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from PIL import Image
from torch import nn

from .common.checkpoints import atomic_save
from .common.datalist import check_image_content, resolve_items
from .common.errors import ConfigValueError, DataError
from .common.intensity import scale_to_unit

__all__ = [
    "ConfigValueError",
    "DataError",
    "PRESETS",
    "RandomFeatures",
    "SYNTHETIC_KEY",
    "TRAINING_SPLITS",
    "autoencoder",
    "check_positive",
    "diffusion_unet",
    "evaluate_samples",
    "feature_distance",
    "grid_image",
    "load_training_images",
    "preset_image_size",
    "read_image",
    "sample_images",
    "train_autoencoder",
    "train_diffusion",
    "training_image_paths",
]

logger = logging.getLogger(__name__)


TRAINING_SPLITS = ("labeled", "unlabeled")
"""The datalist lists the generative models learn from; ``validation`` and ``test`` are never read."""

SYNTHETIC_KEY = "synthetic"
"""The list of generated images in the datalist copy written by :func:`sample_images`."""

MANIFEST = "synthetic.json"
"""The record :func:`sample_images` writes beside its PNGs; a folder holding it may be replaced by a new sampling."""

PRESETS: dict[str, dict[str, Any]] = {
    # medfusion-like: 256 x 256 grey images -> 32 x 32 x 8 latents (three halvings, autoencoder 28.6M parameters);
    # a DiffusionModelUNet of 64M parameters with attention at 16 x 16 and 8 x 8 (the scale of MONAI Model Zoo's 2D
    # brats LDM). Needs a GPU.
    "published": {
        "image_size": 256,
        "autoencoder": {"channels": (64, 128, 256, 512), "latent_channels": 8, "num_res_blocks": 2,
                        "attention_levels": (False, False, False, False), "norm_num_groups": 32,
                        "nonlocal_attention": False},
        "diffusion": {"channels": (128, 256, 512), "num_res_blocks": 2, "attention_levels": (False, True, True),
                      "norm_num_groups": 32, "num_head_channels": 64},
    },
    # 64 x 64 grey images -> 16 x 16 x 4 latents (two halvings); 0.1M + 1.1M parameters: 300 iterations of each
    # network take about 1.5 minutes on a 2-core CPU (0.2 and 0.1 s/it at batch 8) and give blotchy speckle-like
    # textures: enough to run the pipeline end to end, not images worth training on
    "demo": {
        "image_size": 64,
        "autoencoder": {"channels": (16, 32, 32), "latent_channels": 4, "num_res_blocks": 1,
                        "attention_levels": (False, False, False), "norm_num_groups": 8,
                        "nonlocal_attention": False},
        "diffusion": {"channels": (32, 64, 64), "num_res_blocks": 1, "attention_levels": (False, False, True),
                      "norm_num_groups": 8, "num_head_channels": 16},
    },
}
"""Network sizes by preset name; every entry can be overridden by the factories' arguments."""


# ---- networks ----------------------------------------------------------------------------------------------------


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigValueError(f"unknown network preset {name!r}; the presets are {sorted(PRESETS)}.")
    return PRESETS[name]


def preset_image_size(preset: str = "published") -> int:
    """The image side (pixels) the networks of ``preset`` are built for (``published`` 256, ``demo`` 64)."""
    return int(_preset(preset)["image_size"])


def autoencoder(
    preset: str = "published",
    channels: Sequence[int] | None = None,
    latent_channels: int | None = None,
    num_res_blocks: int | None = None,
    attention_levels: Sequence[bool] | None = None,
    norm_num_groups: int | None = None,
    nonlocal_attention: bool | None = None,
) -> AutoencoderKL:
    """The first stage: MONAI's ``AutoencoderKL`` for one-channel 2D images.

    The latent has ``latent_channels`` channels at 1 / 2**(len(channels) - 1) of the image side. The ``published``
    preset maps 256 x 256 images to 32 x 32 x 8 latents (medfusion's compression), ``demo`` maps 64 x 64 images to
    16 x 16 x 4. Any argument given overrides the preset.

    Args:
        preset: ``published`` or ``demo`` (:data:`PRESETS`).
        channels: widths of the levels (each a multiple of ``norm_num_groups``).
        latent_channels: channels of the latent.
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level (needs the ``einops`` package).
        norm_num_groups: groups of the group normalisations.
        nonlocal_attention: self-attention at the bottleneck of the encoder and the decoder.
    """
    p = dict(_preset(preset)["autoencoder"])
    given = {"channels": channels, "latent_channels": latent_channels, "num_res_blocks": num_res_blocks,
             "attention_levels": attention_levels, "norm_num_groups": norm_num_groups,
             "nonlocal_attention": nonlocal_attention}
    p.update({k: v for k, v in given.items() if v is not None})
    chans = tuple(int(c) for c in p["channels"])
    attn = tuple(bool(a) for a in p["attention_levels"])
    if attention_levels is None and len(attn) != len(chans):
        attn = (False,) * len(chans)
    return AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, channels=chans, latent_channels=int(p["latent_channels"]),
        num_res_blocks=int(p["num_res_blocks"]), attention_levels=attn, norm_num_groups=int(p["norm_num_groups"]),
        with_encoder_nonlocal_attn=bool(p["nonlocal_attention"]),
        with_decoder_nonlocal_attn=bool(p["nonlocal_attention"]),
    )


def diffusion_unet(
    preset: str = "published",
    latent_channels: int | None = None,
    channels: Sequence[int] | None = None,
    num_res_blocks: int | None = None,
    attention_levels: Sequence[bool] | None = None,
    norm_num_groups: int | None = None,
    num_head_channels: int | None = None,
) -> DiffusionModelUNet:
    """The second stage: MONAI's ``DiffusionModelUNet`` that predicts the noise of a latent, unconditioned.

    Its input and output channels are the autoencoder's ``latent_channels`` (the preset's unless given). MONAI's
    U-Net always has a self-attention middle block, which needs the ``einops`` package.

    Args:
        preset: ``published`` or ``demo`` (:data:`PRESETS`).
        latent_channels: channels of the autoencoder's latent.
        channels: widths of the levels (each a multiple of ``norm_num_groups``).
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level.
        norm_num_groups: groups of the group normalisations.
        num_head_channels: channels per attention head.
    """
    pre = _preset(preset)
    p = dict(pre["diffusion"])
    given = {"channels": channels, "num_res_blocks": num_res_blocks, "attention_levels": attention_levels,
             "norm_num_groups": norm_num_groups, "num_head_channels": num_head_channels}
    p.update({k: v for k, v in given.items() if v is not None})
    chans = tuple(int(c) for c in p["channels"])
    attn = tuple(bool(a) for a in p["attention_levels"])
    if attention_levels is None and len(attn) != len(chans):
        attn = (False,) * (len(chans) - 1) + (True,)
    latent = int(latent_channels if latent_channels is not None else pre["autoencoder"]["latent_channels"])
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=latent, out_channels=latent, channels=chans, attention_levels=attn,
        num_res_blocks=int(p["num_res_blocks"]), norm_num_groups=int(p["norm_num_groups"]),
        num_head_channels=int(p["num_head_channels"]),
    )


# ---- data --------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """One image file as a grey ``(1, image_size, image_size)`` float32 tensor in [0, 1].

    Grey, grey + alpha, RGB(A) and palette images, 8-bit or 16-bit: colour channels are averaged (alpha dropped),
    then the intensities are scaled to [0, 1] as the bundles' training pipelines scale them
    (:func:`scripts.common.intensity.scale_to_unit`: 8-bit /255, 16-bit /65535, [0, 1] kept, other ranges by
    percentiles); then resized with area interpolation.

    Raises:
        DataError: a missing, empty or undecodable file, a constant or tiny image
            (:func:`scripts.common.datalist.check_image_content`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training image file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"training image file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
    except Exception as e:  # any decoder error: truncated, corrupt, not an image
        raise DataError(f"training image file cannot be read as an image ({type(e).__name__}: {e}): {path}") from None
    if arr.ndim == 3:
        arr = arr[..., :1] if arr.shape[-1] in (1, 2) else arr[..., :3]
        x = arr.astype(np.float32).mean(axis=-1)
    elif arr.ndim == 2:
        x = arr.astype(np.float32)
    else:
        raise DataError(f"training image has shape {arr.shape}; expected a 2D grey or colour image: {path}")
    if not np.isfinite(x).all():
        raise DataError(f"training image contains NaN or infinite values: {path}")
    check_image_content(x, path, "training image", x.shape)
    x = scale_to_unit(torch.as_tensor(x)).numpy()
    t = torch.as_tensor(x, dtype=torch.float32)[None, None]
    if t.shape[2:] != (image_size, image_size):
        t = F.interpolate(t, size=(int(image_size), int(image_size)), mode="area")
    return t[0].clamp_(0.0, 1.0)


def _datalist_path(dataset_dir: str | os.PathLike, datalist_file: str | os.PathLike | None) -> Path:
    return Path(datalist_file) if datalist_file is not None else Path(dataset_dir) / "datalist.json"


def _read_datalist(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"datalist not found: {path}. Prepare a dataset with `python scripts/prepare_data.py` "
                        "(docs/dataset_format.md) and pass its folder as --dataset_dir.")
    try:
        content = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"datalist is not valid JSON ({e}): {path}") from None
    if not isinstance(content, dict):
        raise DataError(f"datalist must be a JSON object with labeled/unlabeled/validation/test lists: {path}")
    return content


def training_image_paths(dataset_dir: str | os.PathLike, datalist_file: str | os.PathLike | None = None) -> list[Path]:
    """The images of the datalist's ``labeled`` and ``unlabeled`` lists, absolute (relative paths are against the
    datalist's folder, as in every datalist of the project); ``validation`` and ``test`` are not looked at.

    Raises:
        DataError: a missing or malformed datalist, or one without training images.
    """
    path = _datalist_path(dataset_dir, datalist_file)
    content = _read_datalist(path)
    out: list[Path] = []
    for split in TRAINING_SPLITS:
        items = content.get(split) or []
        if not isinstance(items, list) or not all(isinstance(it, dict) and isinstance(it.get("image"), str)
                                                  and it["image"] for it in items):
            raise DataError(f"'{split}' in {path} must be a list of items with an 'image' path each.")
        out += [Path(item["image"]) for item in resolve_items(items, path.parent)]
    if not out:
        raise DataError(f"the datalist {path} has no training images: its 'labeled' and 'unlabeled' lists are "
                        "missing or empty (the generative models learn from those two lists only).")
    return out


def load_training_images(
    dataset_dir: str | os.PathLike, datalist_file: str | os.PathLike | None = None, image_size: int = 256
) -> torch.Tensor:
    """All training images (:func:`training_image_paths`) as one ``(N, 1, S, S)`` float16 tensor in [0, 1].

    Kept in memory as float16 (128 KiB per 256 x 256 image, finer than 8-bit steps); each batch is cast to float32.
    """
    paths = training_image_paths(dataset_dir, datalist_file)
    logger.info(f"reading {len(paths)} training images at {image_size} x {image_size}")
    return torch.stack([read_image(p, image_size).half() for p in paths])


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of the training images in pass ``epoch`` (its own generator: the global random state is untouched)."""
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)).tolist())


def _batch_indices(n: int, batch_size: int, iteration: int, seed: int) -> torch.Tensor:
    """The images of iteration ``iteration``: consecutive slices of per-pass permutations, a function of
    ``(seed, iteration)`` only, so a resumed run sees the batches an uninterrupted run would have seen."""
    start = iteration * batch_size
    return torch.tensor([_permutation(n, seed, pos // n)[pos % n] for pos in range(start, start + batch_size)],
                        dtype=torch.long)


# ---- checkpoints and progress --------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in its folder, then rename: a crash leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigValueError(f"the {what} {path} cannot be read ({type(e).__name__}: {e}); move it away to start "
                               "afresh.") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigValueError(f"the {what} {path} holds no model weights ({{'model': state_dict, ...}} expected).")
    return state


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resume(path: Path, recorded: dict, current: dict) -> None:
    diffs = [f"{k} {recorded[k]!r} -> {v!r}" for k, v in current.items() if k in recorded and recorded[k] != v]
    if diffs:
        raise ConfigValueError(f"the checkpoint {path} was written with other settings ({'; '.join(diffs)}): run with "
                               "the recorded values to resume it, or move it away to start afresh.")


def _load_weights(network: nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigValueError(f"the {what} {path} does not fit the configured {type(network).__name__} ({first}): "
                               "build the network with the sizes it was trained with.") from None


class _Progress:
    """Log lines ``<name> iteration i/total (p%) loss ... s/it, ETA`` every ``interval`` steps and at the end.

    The format of the bundles' ``ProgressLogger``; speed and ETA are measured from this call's first step, so a
    resumed run does not count the steps of the run it continues.
    """

    def __init__(self, name: str, total: int, start: int, interval: int, unit: str = "iteration") -> None:
        self.name, self.total, self.start, self.interval = name, int(total), int(start), max(int(interval), 1)
        self.unit = unit
        self.t0 = time.perf_counter()

    def __call__(self, step: int, losses: dict[str, float] | None = None, note: str = "") -> None:
        if step % self.interval and step != self.total:
            return
        rate = (time.perf_counter() - self.t0) / max(step - self.start, 1)
        eta = rate * max(self.total - step, 0)
        text = "".join(f" {k} {v:.4f}" for k, v in (losses or {}).items()) + (f" {note}" if note else "")
        short = "it" if self.unit == "iteration" else self.unit
        logger.info(f"{self.name} {self.unit} {step}/{self.total} ({100.0 * step / max(self.total, 1):.1f}%){text} "
                    f"{rate:.2f} s/{short}, ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s")


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _positive(**values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigValueError(f"{name} must be a positive integer, got {v!r}.")


def check_positive(**values: Any) -> None:
    """Refuse a count below 1 (``--num_samples 0``, ``--diffusion_iterations -1``) before any work, naming it.

    Raises:
        ConfigValueError: ``<name> must be a positive integer, got <value>.``
    """
    _positive(**values)


def _kl(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of N(mu, sigma) from N(0, 1), summed over the latent, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1.0)
    return kl.flatten(1).sum(1).mean()


# ---- training ----------------------------------------------------------------------------------------------------


def train_autoencoder(
    network: AutoencoderKL,
    dataset_dir: str | os.PathLike,
    ckpt_path: str | os.PathLike,
    datalist_file: str | os.PathLike | None = None,
    image_size: int = 256,
    iterations: int = 20000,
    batch_size: int = 8,
    lr: float = 1e-4,
    kl_weight: float = 1e-6,
    adversarial_weight: float = 0.0,
    adversarial_start: int = 0,
    seed: int = 0,
    log_interval: int = 50,
    save_interval: int = 500,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train the autoencoder on the training images: L1 reconstruction + ``kl_weight`` x KL, Adam.

    No perceptual loss: MONAI's ``PerceptualLoss`` downloads its feature networks, and nothing may be downloaded.
    An optional least-squares patch-adversarial term (MONAI's ``PatchDiscriminator`` and ``PatchAdversarialLoss``,
    no pretrained weights) sharpens the speckle texture; it is off by default (``adversarial_weight`` 0) and starts
    at iteration ``adversarial_start`` when on.

    The checkpoint ``ckpt_path`` (``{"model": state_dict, ...}``) is written atomically every ``save_interval``
    iterations and at the end, with the optimiser(s), the iteration and torch's random state; when it exists the
    run resumes from it (a finished one returns at once). Raising ``iterations`` continues a finished run.

    Args:
        network: the autoencoder (:func:`autoencoder`).
        dataset_dir: the prepared dataset folder.
        ckpt_path: the checkpoint to write and resume from.
        datalist_file: the datalist (default ``<dataset_dir>/datalist.json``).
        image_size: side the images are resized to.
        iterations: total optimisation steps.
        batch_size: images per step.
        lr: Adam learning rate (of the discriminator too).
        kl_weight: weight of the KL term.
        adversarial_weight: weight of the generator's adversarial loss; 0 builds no discriminator.
        adversarial_start: first iteration with the adversarial terms.
        seed: the seed of the run (batch order, latent sampling); the weights' initialisation is the network's,
            seeded where the config builds it.
        log_interval: iterations between progress lines.
        save_interval: iterations between checkpoints.
        device: torch device (default: CUDA when available).

    Returns:
        ``{"checkpoint": path, "iteration": last iteration, "losses": [total loss of each step run by this call]}``.
    """
    _positive(image_size=image_size, iterations=iterations, batch_size=batch_size, log_interval=log_interval,
              save_interval=save_interval)
    path, dev = Path(ckpt_path), _device(device)
    settings = {"image_size": int(image_size), "batch_size": int(batch_size), "seed": int(seed), "lr": float(lr),
                "kl_weight": float(kl_weight), "adversarial_weight": float(adversarial_weight),
                "adversarial_start": int(adversarial_start)}
    images = load_training_images(dataset_dir, datalist_file, image_size)
    torch.manual_seed(seed)
    net = network.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    disc = d_opt = adv = None
    if adversarial_weight > 0:
        disc = PatchDiscriminator(spatial_dims=2, channels=32, in_channels=1, out_channels=1, num_layers_d=3).to(dev)
        d_opt = torch.optim.Adam(disc.parameters(), lr=lr)
        adv = PatchAdversarialLoss(criterion="least_squares")
    start = 0
    if path.is_file():
        state = _load(path, "autoencoder checkpoint")
        _check_resume(path, state.get("settings", {}), settings)
        _load_weights(net, state["model"], path, "autoencoder checkpoint")
        opt.load_state_dict(state["optimizer"])
        if disc is not None and d_opt is not None and "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
            d_opt.load_state_dict(state["discriminator_optimizer"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
        logger.info(f"autoencoder: resumed from {path} at iteration {start}/{iterations}")
    if start >= iterations:
        logger.info(f"autoencoder: {path} is at iteration {start}, nothing to train for iterations={iterations}")
        return {"checkpoint": str(path), "iteration": start, "losses": []}

    def save(it: int) -> None:
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": it,
                 "iterations": int(iterations), "settings": settings, "rng": _rng_state()}
        if disc is not None and d_opt is not None:
            state["discriminator"], state["discriminator_optimizer"] = disc.state_dict(), d_opt.state_dict()
        atomic_save(state, path)

    progress = _Progress("autoencoder", iterations, start, log_interval)
    losses: list[float] = []
    net.train()
    for it in range(start, iterations):
        x = images[_batch_indices(len(images), batch_size, it, seed)].float().to(dev)
        recon, z_mu, z_sigma = net(x)
        l1 = F.l1_loss(recon.float(), x)
        kl = _kl(z_mu, z_sigma)
        loss = l1 + kl_weight * kl
        parts = {"loss": 0.0, "l1": l1.item(), "kl": kl.item()}
        use_adv = disc is not None and it >= adversarial_start
        if use_adv:
            g_adv = adv(disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
            loss = loss + adversarial_weight * g_adv
            parts["adv_g"] = g_adv.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if use_adv:
            d_loss = 0.5 * (adv(disc(recon.detach().contiguous().float())[-1], target_is_real=False,
                                 for_discriminator=True)
                            + adv(disc(x.contiguous())[-1], target_is_real=True, for_discriminator=True))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            parts["adv_d"] = d_loss.item()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"autoencoder: the loss is {value} at iteration {it + 1}; lower lr (now {lr}) or "
                                     f"kl_weight (now {kl_weight}).")
        parts["loss"] = value
        losses.append(value)
        done = it + 1
        progress(done, parts)
        if done % save_interval == 0 or done == iterations:
            save(done)
    net.eval()
    logger.info(f"autoencoder: trained to iteration {iterations}; weights in {path}")
    return {"checkpoint": str(path), "iteration": int(iterations), "losses": losses}


def _load_autoencoder(network: AutoencoderKL, ckpt: str | os.PathLike, dev: torch.device) -> dict:
    """Load a finished autoencoder checkpoint into ``network``, frozen, in eval mode; return the checkpoint."""
    path = Path(ckpt)
    if not path.is_file():
        raise ConfigValueError(f"no autoencoder checkpoint at {path}: train the autoencoder first "
                               "(train_autoencoder).")
    state = _load(path, "autoencoder checkpoint")
    if int(state.get("iteration", 0)) < int(state.get("iterations", 0)):
        raise ConfigValueError(f"the autoencoder checkpoint {path} is at iteration {state['iteration']} of "
                               f"{state['iterations']}: finish its training first (run the same command again).")
    _load_weights(network, state["model"], path, "autoencoder checkpoint")
    network.to(dev).eval().requires_grad_(False)
    return state


def train_diffusion(
    network: DiffusionModelUNet,
    autoencoder: AutoencoderKL,
    autoencoder_ckpt: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    ckpt_path: str | os.PathLike,
    datalist_file: str | os.PathLike | None = None,
    image_size: int = 256,
    iterations: int = 40000,
    batch_size: int = 8,
    lr: float = 5e-5,
    num_train_timesteps: int = 1000,
    schedule: str = "scaled_linear_beta",
    beta_start: float = 0.0015,
    beta_end: float = 0.0195,
    seed: int = 0,
    log_interval: int = 50,
    save_interval: int = 500,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train the diffusion U-Net in the latent space of the frozen, trained autoencoder (MONAI's LDM recipe).

    Each step encodes a batch (``LatentDiffusionInferer``: a sample of the autoencoder's posterior times
    ``scale_factor``), noises it at random DDPM timesteps and regresses the noise with an MSE loss. ``scale_factor``
    is 1 / std of the latents of the first (up to) 64 training images, computed once at the start of the run and
    kept in the checkpoint, so the diffusion model sees latents of unit spread whatever the autoencoder's scale.

    The checkpoint ``ckpt_path`` holds ``model``, ``optimizer``, ``iteration``, torch's random state and what
    sampling needs: ``scale_factor``, ``latent_shape`` and the noise ``schedule`` (num_train_timesteps, betas), so
    :func:`sample_images` cannot mix schedules. Written atomically every ``save_interval`` iterations and at the
    end; an existing one is resumed.

    Args:
        network: the diffusion U-Net (:func:`diffusion_unet`).
        autoencoder: the autoencoder network (:func:`autoencoder`), built with the trained sizes.
        autoencoder_ckpt: the finished checkpoint of :func:`train_autoencoder`.
        dataset_dir: the prepared dataset folder.
        ckpt_path: the checkpoint to write and resume from.
        datalist_file: the datalist (default ``<dataset_dir>/datalist.json``).
        image_size: side the images are resized to (the autoencoder's).
        iterations: total optimisation steps.
        batch_size: images per step.
        lr: Adam learning rate.
        num_train_timesteps: DDPM steps of the noise schedule.
        schedule: MONAI noise schedule name (``linear_beta``, ``scaled_linear_beta``, ...).
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        seed: the seed of the run (batch order, noise, timesteps, latent sampling).
        log_interval: iterations between progress lines.
        save_interval: iterations between checkpoints.
        device: torch device (default: CUDA when available).

    Returns:
        ``{"checkpoint": path, "iteration": last iteration, "losses": [loss of each step run by this call],
        "scale_factor": float}``.
    """
    _positive(image_size=image_size, iterations=iterations, batch_size=batch_size, log_interval=log_interval,
              save_interval=save_interval, num_train_timesteps=num_train_timesteps)
    path, dev = Path(ckpt_path), _device(device)
    ae_state = _load_autoencoder(autoencoder, autoencoder_ckpt, dev)
    ae_size = ae_state.get("settings", {}).get("image_size")
    if ae_size is not None and int(ae_size) != int(image_size):
        raise ConfigValueError(f"image_size {image_size} differs from the autoencoder's ({ae_size}, recorded in "
                               f"{autoencoder_ckpt}): use the size the autoencoder was trained at.")
    if autoencoder.latent_channels != network.in_channels:
        raise ConfigValueError(f"the diffusion U-Net takes {network.in_channels} channels but the autoencoder's latent "
                               f"has {autoencoder.latent_channels}: build both with the same latent_channels.")
    schedule_args = {"num_train_timesteps": int(num_train_timesteps), "schedule": str(schedule),
                     "beta_start": float(beta_start), "beta_end": float(beta_end)}
    settings = {"image_size": int(image_size), "batch_size": int(batch_size), "seed": int(seed), "lr": float(lr),
                **schedule_args}
    images = load_training_images(dataset_dir, datalist_file, image_size)
    scheduler = DDPMScheduler(**schedule_args)
    torch.manual_seed(seed)
    net = network.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start = 0
    if path.is_file():
        state = _load(path, "diffusion checkpoint")
        _check_resume(path, state.get("settings", {}), settings)
        _load_weights(net, state["model"], path, "diffusion checkpoint")
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start, scale_factor = int(state["iteration"]), float(state["scale_factor"])
        latent_shape = [int(v) for v in state["latent_shape"]]
        logger.info(f"diffusion: resumed from {path} at iteration {start}/{iterations}")
    else:
        with torch.no_grad():
            z = torch.cat([autoencoder.encode_stage_2_inputs(images[i:i + batch_size].float().to(dev))
                           for i in range(0, min(len(images), 64), batch_size)])
        std = float(z.float().std())
        if not math.isfinite(std) or std <= 0:
            raise ConfigValueError(f"the autoencoder of {autoencoder_ckpt} gives latents of standard deviation {std}: "
                                   "retrain it.")
        scale_factor, latent_shape = 1.0 / std, [int(v) for v in z.shape[1:]]
        logger.info(f"diffusion: latents {tuple(latent_shape)}, scale_factor {scale_factor:.4f} (1 / their std)")
    if start >= iterations:
        logger.info(f"diffusion: {path} is at iteration {start}, nothing to train for iterations={iterations}")
        return {"checkpoint": str(path), "iteration": start, "losses": [], "scale_factor": scale_factor}
    inferer = LatentDiffusionInferer(scheduler, scale_factor=scale_factor)

    def save(it: int) -> None:
        atomic_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "iteration": it,
               "iterations": int(iterations), "settings": settings, "rng": _rng_state(),
               "scale_factor": scale_factor, "latent_shape": latent_shape, "schedule": schedule_args,
               "autoencoder_ckpt": str(Path(autoencoder_ckpt).resolve())}, path)

    progress = _Progress("diffusion", iterations, start, log_interval)
    losses: list[float] = []
    net.train()
    for it in range(start, iterations):
        x = images[_batch_indices(len(images), batch_size, it, seed)].float().to(dev)
        noise = torch.randn((len(x), *latent_shape), device=dev)
        timesteps = torch.randint(0, scheduler.num_train_timesteps, (len(x),), device=dev).long()
        pred = inferer(inputs=x, autoencoder_model=autoencoder, diffusion_model=net, noise=noise, timesteps=timesteps)
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"diffusion: the loss is {value} at iteration {it + 1}; lower lr (now {lr}).")
        losses.append(value)
        done = it + 1
        progress(done, {"loss": value})
        if done % save_interval == 0 or done == iterations:
            save(done)
    net.eval()
    logger.info(f"diffusion: trained to iteration {iterations}; weights in {path}")
    return {"checkpoint": str(path), "iteration": int(iterations), "losses": losses, "scale_factor": scale_factor}


# ---- sampling ----------------------------------------------------------------------------------------------------


def _check_writable(target: Path, what: str) -> None:
    """Refuse ``target`` (a folder to create or fill) when a file stands in its path or it cannot be written.

    Probes the nearest existing folder of the path with a temporary subfolder, removed at once: nothing is left.
    """
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigValueError(f"{what} {target} cannot be created: {existing} is a file, not a folder.")
    probe = existing / f".write_probe{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise ConfigValueError(f"{what} {target} cannot be written ({e.strerror or e} in {existing}): choose a "
                               "writable folder.") from None


def _check_output_dir(out: Path) -> None:
    """Refuse an output folder that is a file, holds files of something else, or cannot be written."""
    if out.exists() and not out.is_dir():
        raise ConfigValueError(f"output_dir {out} is a file, not a folder: choose a folder for the generated images.")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigValueError(f"output_dir {out} holds files that are not a previous sampling's (no {MANIFEST}): "
                               "choose an empty or new folder; it is replaced as a whole.")
    _check_writable(out.parent, "the folder of output_dir")


def _relative_or_absolute(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it, else absolute (POSIX separators)."""
    path, base = path.resolve(), base.resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def sample_images(
    autoencoder: AutoencoderKL,
    network: DiffusionModelUNet,
    autoencoder_ckpt: str | os.PathLike,
    diffusion_ckpt: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    num_samples: int = 100,
    output_dir: str | os.PathLike | None = None,
    datalist_file: str | os.PathLike | None = None,
    output_datalist: str | os.PathLike | None = None,
    num_inference_steps: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    prefix: str = "synthetic",
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Generate ``num_samples`` images with DDIM and add them to a copy of the datalist.

    Each image starts from its own latent noise, drawn in order from a generator seeded with ``seed``, and DDIM runs
    deterministically (eta 0) with the checkpoint's noise schedule, so the same seed and ``batch_size`` give
    byte-identical PNGs (on the same device and torch version); another ``batch_size`` gives the same images up to
    floating-point rounding (a pixel may differ by one grey level). The images are 8-bit grey PNGs
    ``<prefix>_00000.png``... in ``output_dir`` (default ``<dataset_dir>/synthetic``), written to a temporary
    folder and moved into place at the end (a folder of an earlier sampling is replaced whole; a folder holding
    anything else is refused), with ``synthetic.json`` recording how they were made.

    The datalist copy (default ``datalist_synthetic.json`` beside the datalist; never the datalist itself) is the
    datalist plus a ``synthetic`` list of ``{"image": path}`` items. Its paths follow the project's rule, relative
    to the copy's folder (``synthetic/synthetic_00000.png``) when the images lie inside it, else absolute; when
    the copy is written to another folder than the datalist's, the copied lists' relative paths are made absolute.
    The copy is written atomically, after the images.

    Args:
        autoencoder: the autoencoder network, built with the trained sizes.
        network: the diffusion U-Net, built with the trained sizes.
        autoencoder_ckpt: the autoencoder checkpoint (:func:`train_autoencoder`).
        diffusion_ckpt: the diffusion checkpoint (:func:`train_diffusion`).
        dataset_dir: the prepared dataset folder.
        num_samples: images to generate.
        output_dir: folder of the PNGs (default ``<dataset_dir>/synthetic``).
        datalist_file: the datalist (default ``<dataset_dir>/datalist.json``).
        output_datalist: the datalist copy (default ``datalist_synthetic.json`` beside the datalist).
        num_inference_steps: DDIM steps.
        batch_size: images denoised together.
        seed: the sampling seed.
        prefix: file name prefix of the PNGs.
        device: torch device (default: CUDA when available).

    Returns:
        ``{"images": [PNG paths], "datalist": path of the copy, "output_dir": path}``.

    Raises:
        ConfigValueError: a sample count, step count or batch size below 1, an output folder that is a file, holds
            other files or cannot be written, an output datalist equal to the datalist, a missing or unfinished
            checkpoint.
        DataError: a missing or malformed datalist, or one without training images.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigValueError(f"num_samples must be a positive number of images to generate, got {num_samples!r}.")
    _positive(num_inference_steps=num_inference_steps, batch_size=batch_size)
    if not prefix or any(c in prefix for c in "/\\"):
        raise ConfigValueError(f"prefix must be a plain file name prefix, got {prefix!r}.")
    src = _datalist_path(dataset_dir, datalist_file)
    training_image_paths(dataset_dir, src)  # a datalist with training images, or a DataError
    content = _read_datalist(src)
    out = Path(output_dir) if output_dir is not None else Path(dataset_dir) / SYNTHETIC_KEY
    dst = Path(output_datalist) if output_datalist is not None else src.with_name("datalist_synthetic.json")
    if dst.resolve() == src.resolve():
        raise ConfigValueError(f"output_datalist {dst} is the datalist itself: the datalist is never overwritten; "
                               "choose another file name (default datalist_synthetic.json).")
    if dst.is_dir():
        raise ConfigValueError(f"output_datalist {dst} is a folder: name a JSON file.")
    _check_writable(dst.parent, "the folder of output_datalist")
    _check_output_dir(out)
    if out.resolve() in (src.parent.resolve(), Path(dataset_dir).resolve()):
        raise ConfigValueError(f"output_dir {out} is the dataset folder: choose a subfolder such as "
                               f"{Path(dataset_dir) / SYNTHETIC_KEY}.")
    dev = _device(device)
    diff_path = Path(diffusion_ckpt)
    if not diff_path.is_file():
        raise ConfigValueError(f"no diffusion checkpoint at {diff_path}: train the diffusion model first "
                               "(train_diffusion).")
    state = _load(diff_path, "diffusion checkpoint")
    if int(state.get("iteration", 0)) < int(state.get("iterations", 0)):
        raise ConfigValueError(f"the diffusion checkpoint {diff_path} is at iteration {state['iteration']} of "
                               f"{state['iterations']}: finish its training first (run the same command again).")
    sched_args = dict(state["schedule"])
    if num_inference_steps > int(sched_args["num_train_timesteps"]):
        raise ConfigValueError(f"num_inference_steps {num_inference_steps} exceeds the {sched_args['num_train_timesteps']} "
                               "steps the model was trained with.")
    _load_autoencoder(autoencoder, autoencoder_ckpt, dev)
    _load_weights(network, state["model"], diff_path, "diffusion checkpoint")
    network.to(dev).eval()
    scheduler = DDIMScheduler(clip_sample=False, **sched_args)
    scheduler.set_timesteps(num_inference_steps)
    inferer = LatentDiffusionInferer(scheduler, scale_factor=float(state["scale_factor"]))
    latent_shape = [int(v) for v in state["latent_shape"]]

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [f"{prefix}_{i:05d}.png" for i in range(num_samples)]
    try:
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.cat([torch.randn((1, *latent_shape), generator=gen) for _ in range(num_samples)])
        progress = _Progress("sampling", math.ceil(num_samples / batch_size), 0, 1, unit="batch")
        for b, i in enumerate(range(0, num_samples, batch_size)):
            with torch.no_grad():
                images = inferer.sample(input_noise=noise[i:i + batch_size].to(dev), autoencoder_model=autoencoder,
                                        diffusion_model=network, scheduler=scheduler, verbose=False)
            pixels = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
            for k, arr in enumerate(pixels):
                Image.fromarray(arr[0]).save(tmp / names[i + k])
            progress(b + 1, note=f"({min(i + batch_size, num_samples)}/{num_samples} images)")
        manifest = {"num_samples": num_samples, "seed": int(seed), "num_inference_steps": int(num_inference_steps),
                    "scheduler": "DDIM (eta 0)", "schedule": sched_args, "scale_factor": float(state["scale_factor"]),
                    "autoencoder_ckpt": str(Path(autoencoder_ckpt).resolve()), "diffusion_ckpt": str(diff_path.resolve()),
                    "images": names}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    copy = json.loads(json.dumps(content))
    if dst.parent.resolve() != src.parent.resolve():
        for items in copy.values():
            if isinstance(items, list):
                for item in items:
                    for k in ("image", "label"):
                        if isinstance(item, dict) and isinstance(item.get(k), str) and not os.path.isabs(item[k]):
                            item[k] = (src.parent / item[k]).resolve().as_posix()
    if SYNTHETIC_KEY in copy:
        logger.info(f"the '{SYNTHETIC_KEY}' list of {src} is replaced in the copy {dst}")
    copy[SYNTHETIC_KEY] = [{"image": _relative_or_absolute(out / n, dst.parent)} for n in names]
    _atomic_write(dst, lambda p: p.write_text(json.dumps(copy, indent=2) + "\n"))
    logger.info(f"sampling: {num_samples} images in {out}; datalist with a '{SYNTHETIC_KEY}' list: {dst}")
    return {"images": [str(out / n) for n in names], "datalist": str(dst), "output_dir": str(out)}


# ---- measure -----------------------------------------------------------------------------------------------------


class RandomFeatures(nn.Module):
    """A fixed, untrained CNN whose weights are a function of ``seed`` only: the feature network of
    :func:`feature_distance`, since no pretrained network (Inception, RadImageNet) can be downloaded.

    Three stride-2 conv stages (16, 32, 64 channels, leaky ReLU) on the image mapped to [-1, 1], features = the
    global mean and standard deviation of the last stage (128 numbers). The weights are drawn from their own
    ``torch.Generator`` (He-normal scale), so the global random state is untouched and the same seed gives the same
    features in every run on the same torch version.

    Limits: random features capture intensity, contrast and texture statistics at a few scales, not anatomy; the
    distance is comparable only between runs with the same seed, image size and torch version, and is not on the
    scale of a published FID.

    Args:
        seed: the seed of the weights.
        channels: widths of the stages.
    """

    def __init__(self, seed: int = 0, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = []
        cin = 1
        for cout in channels:
            conv = nn.Conv2d(cin, int(cout), kernel_size=3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            layers += [conv, nn.LeakyReLU(0.2)]
            cin = int(cout)
        self.body = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 2.0 - 1.0).flatten(2)
        return torch.cat([h.mean(-1), h.std(-1)], dim=1)


def _features(images: torch.Tensor, net: nn.Module, batch_size: int = 32) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            f = net(images[i:i + batch_size].float())
            out.append(f.flatten(2).mean(-1) if f.ndim > 2 else f)
    return torch.cat(out).double()


def feature_distance(
    real: torch.Tensor, generated: torch.Tensor, feature_network: nn.Module | None = None, feature_seed: int = 0
) -> float:
    """Frechet distance (MONAI's ``FIDMetric``) between the features of two image sets ``(N, 1, H, W)`` in [0, 1].

    Args:
        real: the real images.
        generated: the generated images.
        feature_network: a fixed network mapping images to ``(N, F)`` or ``(N, F, ...)`` features (spatial axes
            averaged), e.g. a trained autoencoder's ``encoder``; default :class:`RandomFeatures` (``feature_seed``).
        feature_seed: the seed of the default feature network.

    Raises:
        DataError: fewer than two images in a set.
    """
    if len(real) < 2 or len(generated) < 2:
        raise DataError(f"the distance needs at least two images per set, got {len(real)} real and {len(generated)} "
                        "generated.")
    net = feature_network if feature_network is not None else RandomFeatures(feature_seed)
    fid = FIDMetric()(_features(generated, net), _features(real, net))
    return max(float(fid), 0.0)


def grid_image(real: torch.Tensor, generated: torch.Tensor, columns: int = 8, gap: int = 2) -> np.ndarray:
    """An 8-bit grey grid: the first ``columns`` real images on the top row, as many generated ones below."""
    n = int(columns)
    rows = [real[:n], generated[:n]]
    size = int(real.shape[-1])
    cols = max(len(r) for r in rows)
    grid = np.full((2 * size + 3 * gap, cols * size + (cols + 1) * gap), 255, dtype=np.uint8)
    for r, imgs in enumerate(rows):
        for c, img in enumerate(imgs):
            y, x = gap + r * (size + gap), gap + c * (size + gap)
            grid[y:y + size, x:x + size] = (img[0].float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return grid


def evaluate_samples(
    dataset_dir: str | os.PathLike,
    synthetic_datalist: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    image_size: int = 256,
    columns: int = 8,
    max_images: int = 500,
    feature_seed: int = 0,
    feature_network: nn.Module | None = None,
) -> dict[str, Any]:
    """Compare the generated images with the real training images: a grid PNG and a Frechet feature distance.

    The real images are the training lists of the datalist copy (``labeled`` + ``unlabeled``), the generated ones
    its ``synthetic`` list; both are read as for training, at ``image_size``. Up to ``max_images`` of each are
    compared (the first ones). Writes ``generation_grid.png`` (top row real, bottom row generated) and
    ``generation_distance.json`` (the distance, the feature network, the image counts) to ``output_dir``.

    The distance is MONAI's ``FIDMetric`` on the features of :class:`RandomFeatures` (a seeded, untrained CNN;
    nothing pretrained can be downloaded), or of ``feature_network`` when given (e.g. the trained autoencoder's
    encoder, whose latents are fitted to these very images). 0 means the two sets have the same feature mean and
    covariance; it is a relative measure for comparing runs and checkpoints, not a published FID: see
    :class:`RandomFeatures` for its limits. With fewer images than features the covariances are rank-deficient and
    the distance is noisier; compare counts of the same size.

    Args:
        dataset_dir: the prepared dataset folder.
        synthetic_datalist: the datalist copy of :func:`sample_images` (default
            ``<dataset_dir>/datalist_synthetic.json``).
        output_dir: folder of the grid and the JSON (default: the folder of the first generated image).
        image_size: side the images are compared at.
        columns: images per row of the grid.
        max_images: most images of each set compared.
        feature_seed: the seed of :class:`RandomFeatures`.
        feature_network: another fixed feature network.

    Returns:
        ``{"frechet_distance": float, "grid": path, "json": path, "num_real": int, "num_generated": int, ...}``.
    """
    _positive(image_size=image_size, columns=columns, max_images=max_images)
    path = Path(synthetic_datalist) if synthetic_datalist is not None else Path(dataset_dir) / "datalist_synthetic.json"
    content = _read_datalist(path)
    items = content.get(SYNTHETIC_KEY) or []
    if not isinstance(items, list) or not items:
        raise DataError(f"the datalist {path} has no '{SYNTHETIC_KEY}' list: generate images first (sample_images).")
    gen_paths = [Path(it["image"]) if os.path.isabs(it["image"]) else path.parent / it["image"] for it in items]
    real_paths = training_image_paths(dataset_dir, path)
    real = torch.stack([read_image(p, image_size) for p in real_paths[:max_images]])
    generated = torch.stack([read_image(p, image_size) for p in gen_paths[:max_images]])
    distance = feature_distance(real, generated, feature_network, feature_seed)
    out = Path(output_dir) if output_dir is not None else gen_paths[0].parent
    out.mkdir(parents=True, exist_ok=True)
    grid, record_path = out / "generation_grid.png", out / "generation_distance.json"
    _atomic_write(grid, lambda p: Image.fromarray(grid_image(real, generated, columns)).save(p, format="PNG"))
    record = {
        "frechet_distance": distance,
        "metric": "monai.metrics.FIDMetric on fixed-network features",
        "feature_network": (type(feature_network).__name__ if feature_network is not None
                            else f"RandomFeatures(seed={feature_seed}), untrained"),
        "image_size": int(image_size),
        "num_real": len(real),
        "num_generated": len(generated),
        "datalist": str(path),
        "grid": grid.name,
    }
    _atomic_write(record_path, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    logger.info(f"generated vs real: Frechet feature distance {distance:.4f} ({len(generated)} vs {len(real)} images); "
                f"grid {grid}")
    return {**record, "grid": str(grid), "json": str(record_path)}
