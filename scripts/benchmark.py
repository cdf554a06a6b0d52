# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Speed and memory of each workflow, at the published and the demo settings, in fp32 and AMP.

Each measurement runs in its own subprocess (so the peak resident memory belongs to that workflow alone),
times ``repeats`` iterations after ``warmup`` ones on synthetic inputs of the published shapes, and reports
the median seconds per iteration (or per image / volume for inference) and the peak memory (resident set on
CPU, ``max_memory_allocated`` on CUDA).

Usage (from the repository root)::

    python scripts/benchmark.py run                                  # every workflow, CPU, 2 threads
    python scripts/benchmark.py run --workflows switch,bcp --settings published --precisions amp
    python scripts/benchmark.py one switch published amp             # a single measurement, printed as JSON
    python scripts/benchmark.py profile switch published amp         # where the time goes (torch.profiler)
    python scripts/benchmark.py layout crossmatch_acdc published fp32  # contiguous against channels-last

Writes ``benchmarks/results.json`` and ``benchmarks/results.md`` (``--output`` to change the folder). A table
measured on another machine is not overwritten: ``run`` stops and asks for another ``--output`` folder, or for
``--replace True``. Bad arguments and failed measurements end the command with exit status 2 and a one-line error.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cli_args import fire_cli, output_folder

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmark")

# workflow -> (bundle, description)
WORKFLOWS = {
    "switch": ("switch_us", "Switch self-training iteration"),
    "bcp": ("switch_us", "BCP self-training iteration"),
    "supervised": ("switch_us", "supervised iteration"),
    "infer2d": ("switch_us", "2D inference per image"),
    "crossmatch_la": ("crossmatch_3d", "CrossMatch LA iteration"),
    "crossmatch_acdc": ("crossmatch_3d", "CrossMatch ACDC iteration"),
    "la_window_default": ("crossmatch_3d", "LA sliding window (default overlap) per volume"),
    "la_window_paper": ("crossmatch_3d", "LA sliding window (paper stride 18,18,4) per volume"),
    "mgcc": ("mgcc_us", "MGCC iteration"),
    "ldm_autoencoder": ("mgcc_us", "LDM autoencoder training iteration"),
    "ldm_diffusion": ("mgcc_us", "LDM diffusion training iteration"),
    "ldm_sample": ("mgcc_us", "LDM sampling per image (DDIM)"),
    "localcontrast": ("localcontrast_2d", "local contrastive joint iteration"),
}
SETTINGS = {
    # published: the papers' batch and image sizes; demo: what the demo overlays train with
    "switch": {"published": {"batch": 8, "size": 256}, "demo": {"batch": 4, "size": 128}},
    "bcp": {"published": {"batch": 8, "size": 256}, "demo": {"batch": 4, "size": 128}},
    "supervised": {"published": {"batch": 8, "size": 256}, "demo": {"batch": 4, "size": 128}},
    "infer2d": {"published": {"batch": 1, "size": 256}, "demo": {"batch": 1, "size": 128}},
    "crossmatch_la": {"published": {"batch": 2, "patch": (112, 112, 80), "filters": 16},
                      "demo": {"batch": 2, "patch": (48, 48, 32), "filters": 8}},
    "crossmatch_acdc": {"published": {"batch": 12, "size": 256}, "demo": {"batch": 4, "size": 64}},
    "la_window_default": {"published": {"volume": (175, 132, 88), "patch": (112, 112, 80), "filters": 16},
                          "demo": {"volume": (80, 80, 56), "patch": (48, 48, 32), "filters": 8}},
    "la_window_paper": {"published": {"volume": (175, 132, 88), "patch": (112, 112, 80), "filters": 16},
                        "demo": {"volume": (80, 80, 56), "patch": (48, 48, 32), "filters": 8}},
    "mgcc": {"published": {"batch": 4, "size": 256, "width": 64, "mixer_depth": 3},
             "demo": {"batch": 4, "size": 64, "width": 8, "mixer_depth": 1}},
    "ldm_autoencoder": {"published": {"batch": 8, "preset": "published"}, "demo": {"batch": 8, "preset": "demo"}},
    "localcontrast": {"published": {"batch": 20, "contrast": 5, "size": 192, "classes": 4},
                      "demo": {"batch": 8, "contrast": 5, "size": 64, "classes": 4}},
    "ldm_diffusion": {"published": {"batch": 8, "preset": "published"}, "demo": {"batch": 8, "preset": "demo"}},
    "ldm_sample": {"published": {"batch": 1, "preset": "published", "steps": 50},
                   "demo": {"batch": 1, "preset": "demo", "steps": 50}},
}


class BenchmarkError(ValueError):
    """Bad arguments, a table of another machine in the way, or measurements that failed."""


def _check(workflows: Sequence[str], settings: Sequence[str], precisions: Sequence[str]) -> None:
    """Raise :class:`BenchmarkError` naming the choices for any unknown workflow, setting or precision."""
    for kind, values, choices in (("workflow", workflows, WORKFLOWS), ("setting", settings, ("published", "demo")),
                                  ("precision", precisions, ("amp", "fp32"))):
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise BenchmarkError(f"unknown {kind} {', '.join(map(repr, bad)) or '(none given)'}; "
                                 f"choose from {', '.join(choices)}")


def _check_counts(**counts: int) -> None:
    """Raise :class:`BenchmarkError` for a count below its minimum: ``warmup`` may be 0, the others at least 1."""
    for key, value in counts.items():
        least = 0 if key == "warmup" else 1
        if value < least:
            raise BenchmarkError(f"--{key} must be at least {least}, got {value}")


def _import_bundle(name: str):
    """The ``scripts`` package of ``bundles/<name>``; another bundle's is unloaded first, the same one is reused."""
    root = REPO / "bundles" / name
    loaded = sys.modules.get("scripts")
    if loaded is not None and Path(loaded.__file__).parent.parent == root:
        return loaded
    for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(root))
    return importlib.import_module("scripts")


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time(step: Callable[[], None], warmup: int, repeats: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds of each timed step after ``warmup`` untimed ones, and the mean minor page faults per timed step."""
    times, faults = [], 0
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return times, faults / max(repeats, 1)


def _bundle_channels_last(bundle: str, config: str = "train.yaml") -> bool | str:
    """The ``channels_last`` setting of a bundle's config (``auto`` where it sets none), so that a figure is that of
    a bundle run: switch_us sets ``true`` (channels-last in fp32 too), the others ``auto`` (with AMP only)."""
    import yaml  # noqa: PLC0415 - only the switch_us workflows read it

    text = (REPO / "bundles" / bundle / "configs" / config).read_text()
    return yaml.safe_load(text).get("channels_last", "auto")


def _switch_like(workflow: str, cfg: dict, amp: bool, device: torch.device, layout: bool | str | None = None):
    _import_bundle("switch_us")
    from scripts.handlers import EMATeacher, FrequencyDomainSwitch
    from scripts.networks import UNet2D
    from scripts.trainer import BCPTrainer, SupervisedBaselineTrainer, SwitchTrainer

    b, s = cfg["batch"], cfg["size"]
    net = UNet2D(projector=workflow == "switch").to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    teacher = EMATeacher(net)
    cls = {"switch": SwitchTrainer, "bcp": BCPTrainer, "supervised": SupervisedBaselineTrainer}[workflow]
    extra = {"coarse_size": s // 2, "fine_size": s // 8} if workflow == "switch" else {}
    handlers = [teacher, FrequencyDomainSwitch()] if workflow == "switch" else [teacher] if workflow == "bcp" else []
    trainer = cls(device=device, max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net, optimizer=opt,
                  teacher=teacher if handlers else None, pretrain_iterations=0, amp=amp,
                  channels_last=_bundle_channels_last("switch_us") if layout is None else layout,
                  train_handlers=handlers, **extra)
    label = (torch.rand(b, 1, s, s) > 0.7).float()
    batch = {"image": torch.rand(b, 1, s, s), "label": label, "unlabeled_image": torch.rand(b, 1, s, s)}
    trainer.state.iteration = 1
    teacher.reset()
    fds = FrequencyDomainSwitch()

    def step() -> None:
        data = dict(batch)
        trainer.state.batch = data
        if workflow == "switch":
            fds(trainer)
        trainer._iteration(trainer, data)
        if workflow != "supervised":
            teacher(trainer)

    return step, {"amp_dtype": str(trainer.amp_dtype), "channels_last": trainer.channels_last, "unit": "s/iteration"}


def _infer2d(cfg: dict, amp: bool, device: torch.device, layout: bool | str | None = None):
    _import_bundle("switch_us")
    from scripts.common.inference import AmpInferer
    from scripts.networks import UNet2D

    net = UNet2D(projector=False).to(device).eval()
    channels_last = _bundle_channels_last("switch_us", "inference.yaml") if layout is None else layout
    inferer = AmpInferer(amp=amp, channels_last=channels_last, softmax=False, fold_bn=False)
    x = torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"], device=device)

    def step() -> None:
        with torch.no_grad():
            torch.softmax(inferer(x, net), 1).argmax(1)

    return step, {"channels_last": _resolved_layout(channels_last, amp, device), "unit": "s/image"}


def _resolved_layout(channels_last: bool | str, amp: bool, device: torch.device) -> bool:
    """Whether an inferer with these settings runs channels-last (the bundles' rule for ``auto``)."""
    from scripts.common.runtime import resolve_amp_dtype, resolve_channels_last  # noqa: PLC0415 - the bundle's

    return resolve_channels_last(channels_last, resolve_amp_dtype(device, amp), device)


def _crossmatch(workflow: str, cfg: dict, amp: bool, device: torch.device, layout: bool | str | None = None):
    """A CrossMatch iteration (LA V-Net or ACDC U-Net) or an LA sliding-window inference, with the bundle's defaults
    (AMP as asked; the layout as the bundle's ``channels_last: auto``) unless ``layout`` forces one."""
    channels_last = "auto" if layout is None else layout
    _import_bundle("crossmatch_3d")
    from scripts.common.inference import AmpInferer
    from scripts.inferers import PaperSlidingWindowInferer
    from scripts.networks import UNet2D, VNet
    from scripts.trainer import CrossMatchTrainer

    if workflow.startswith("la_window"):
        net = VNet(1, 2, cfg.get("filters", 16), has_dropout=True).to(device).eval()
        patch = cfg["patch"]
        if workflow == "la_window_paper":
            base = PaperSlidingWindowInferer(roi_size=patch, strides=(18, 18, 4), sw_batch_size=2)
        else:
            from monai.inferers import SlidingWindowInferer

            base = SlidingWindowInferer(roi_size=patch, sw_batch_size=2, overlap=0.5, mode="gaussian")
        inferer = AmpInferer(base, amp=amp, channels_last=channels_last)
        x = torch.randn(1, 1, *cfg["volume"], device=device)

        def infer() -> None:
            inferer(x, net).argmax(1)

        return infer, {"channels_last": _resolved_layout(channels_last, amp, device), "unit": "s/volume"}

    b = cfg["batch"]
    if workflow == "crossmatch_la":
        net = VNet(1, 2, cfg.get("filters", 16), has_dropout=True).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
        spatial, classes, extra = tuple(cfg["patch"]), 2, {"conf_threshold": 0.85, "kd_weight": 1.0}
    else:
        net = UNet2D(1, 4).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
        spatial, classes, extra = (cfg["size"], cfg["size"]), 4, {"conf_threshold": 0.95, "kd_weight": 0.5}
    trainer = CrossMatchTrainer(device=device, max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net,
                                optimizer=opt, num_classes=classes, amp=amp, channels_last=channels_last, **extra)
    batch = {"image": torch.randn(b, 1, *spatial), "label": torch.randint(0, classes, (b, 1, *spatial))}
    for key in ("unlabeled_image", "mix_image"):
        for suffix in ("", "_s1", "_s2"):
            batch[key + suffix] = torch.randn(b, 1, *spatial)
    trainer.state.iteration = 1

    def step() -> None:
        trainer._iteration(trainer, dict(batch))

    return step, {"amp_dtype": str(trainer.amp_dtype), "channels_last": trainer.channels_last, "unit": "s/iteration"}


def _mgcc(cfg: dict, amp: bool, device: torch.device, layout: bool | str | None = None):
    """One MGCC iteration: 4 labelled + 4 unlabelled images through the four decoders, loss, update."""
    from scripts.networks import MGCCNet
    from scripts.trainer import MGCCTrainer

    b, s = cfg["batch"], cfg["size"]
    net = MGCCNet(width=cfg["width"], mixer_depth=cfg["mixer_depth"]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    trainer = MGCCTrainer(device=device, max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net,
                          optimizer=opt, amp=amp, channels_last="auto" if layout is None else layout)
    batch = {"image": torch.rand(b, 1, s, s), "label": (torch.rand(b, 1, s, s) > 0.7).float(),
             "unlabeled_image": torch.rand(b, 1, s, s)}
    trainer.state.iteration = 1

    def step() -> None:
        trainer._iteration(trainer, dict(batch))

    return step, {"amp_dtype": str(trainer.amp_dtype), "channels_last": trainer.channels_last, "unit": "s/iteration"}


def _ldm(workflow: str, cfg: dict, amp: bool, device: torch.device):
    """The generation stage's networks at a preset's sizes: an autoencoder or diffusion training step (the
    trainers' losses: L1 + KL, and latent noise prediction), or DDIM sampling of one image. fp32 only (the stage
    has no AMP)."""
    from monai.inferers import LatentDiffusionInferer
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    from scripts import generation

    size, b = generation.preset_image_size(cfg["preset"]), cfg["batch"]
    ae = generation.autoencoder(cfg["preset"]).to(device)
    x = torch.rand(b, 1, size, size, device=device)
    if workflow == "ldm_autoencoder":
        opt = torch.optim.Adam(ae.parameters(), lr=1e-4)

        def step() -> None:
            recon, mu, sigma = ae(x)
            loss = (recon - x).abs().mean() + 1e-6 * (0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, {"amp_dtype": "None", "unit": "s/iteration"}
    unet = generation.diffusion_unet(cfg["preset"]).to(device)
    ae.eval()
    if workflow == "ldm_diffusion":
        scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                                  beta_end=0.0195)
        inferer = LatentDiffusionInferer(scheduler, scale_factor=1.0)
        opt = torch.optim.Adam(unet.parameters(), lr=5e-5)

        def step() -> None:
            with torch.no_grad():
                z = ae.encode_stage_2_inputs(x)
            noise = torch.randn_like(z)
            t = torch.randint(0, 1000, (b,), device=device)
            pred = inferer(inputs=x, autoencoder_model=ae, diffusion_model=unet, noise=noise, timesteps=t)
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, {"amp_dtype": "None", "unit": "s/iteration"}
    scheduler = DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                              beta_end=0.0195)
    scheduler.set_timesteps(cfg["steps"])
    inferer = LatentDiffusionInferer(scheduler, scale_factor=1.0)
    with torch.no_grad():
        latent_shape = ae.encode_stage_2_inputs(x[:1]).shape
    unet.eval()

    def step() -> None:
        with torch.no_grad():
            inferer.sample(input_noise=torch.randn(latent_shape, device=device), autoencoder_model=ae,
                           diffusion_model=unet, scheduler=scheduler, verbose=False)

    return step, {"amp_dtype": "None", "unit": "s/image"}


def _localcontrast(cfg: dict, amp: bool, device: torch.device, layout: bool | str | None = None):
    """One joint iteration of the local contrastive self-training: the segmentation batch and 10 contrastive pairs
    (5 labelled + 5 pseudo-labelled slices) in one forward pass, both losses, update."""
    from scripts.data import CONTRAST_LABELED, CONTRAST_UNLABELED
    from scripts.losses import JointLoss
    from scripts.networks import LocalContrastUNet
    from scripts.trainer import LocalContrastTrainer
    from scripts.transforms import RandBrightnessContrast

    b, n, s, c = cfg["batch"], cfg["contrast"], cfg["size"], cfg["classes"]
    net = LocalContrastUNet(num_classes=c).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = LocalContrastTrainer(device=device, max_epochs=1, epoch_length=1, train_data_loader=[{}], network=net,
                                   optimizer=opt, loss=JointLoss(c), supervised_iterations=0,
                                   intensity=RandBrightnessContrast(), num_classes=c, amp=amp,
                                   channels_last="auto" if layout is None else layout)

    def labels(k: int) -> torch.Tensor:  # every class in every slice: four bands
        lab = torch.zeros(k, 1, s, s)
        for i in range(1, c):
            lab[..., i * s // c:(i + 1) * s // c] = i
        return lab

    batch = {"image": torch.rand(b, 1, s, s), "label": labels(b)}
    for prefix in (CONTRAST_LABELED, CONTRAST_UNLABELED):
        batch[f"{prefix}_image"], batch[f"{prefix}_label"] = torch.rand(n, 1, s, s), labels(n)
    trainer.state.iteration = 1

    def step() -> None:
        trainer._iteration(trainer, dict(batch))

    return step, {"amp_dtype": str(trainer.amp_dtype), "channels_last": trainer.channels_last, "unit": "s/iteration"}


def _build(workflow: str, setting: str, precision: str, device: str | None, threads: int,
           keep_freed_memory: bool = True,
           layout: bool | None = None):
    """The step function of one workflow at one setting and precision, with its record fields, config and device.

    ``keep_freed_memory`` applies the bundles' allocator setting of the same name (their configs' default), so the
    figures are those of a bundle run. ``layout`` forces the memory format (True: channels-last, False: contiguous)
    where the bundle's own setting would decide.
    """
    _check([workflow], [setting], [precision])
    if layout is not None and workflow.startswith("ldm_"):
        raise BenchmarkError(f"{workflow} has no memory-format setting (the generation stage runs contiguous)")
    _check_counts(threads=threads)
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    _import_bundle(WORKFLOWS[workflow][0])
    importlib.import_module("scripts.common.runtime").keep_freed_memory(bool(keep_freed_memory))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = SETTINGS[workflow][setting]
    amp = precision == "amp"
    if workflow in ("switch", "bcp", "supervised"):
        step, info = _switch_like(workflow, cfg, amp, dev, layout)
    elif workflow == "infer2d":
        step, info = _infer2d(cfg, amp, dev, layout)
    elif workflow == "mgcc":
        step, info = _mgcc(cfg, amp, dev, layout)
    elif workflow.startswith("ldm_"):
        step, info = _ldm(workflow, cfg, amp, dev)
    elif workflow == "localcontrast":
        step, info = _localcontrast(cfg, amp, dev, layout)
    else:
        step, info = _crossmatch(workflow, cfg, amp, dev, layout)
    return step, info, cfg, dev


def profile(workflow: str, setting: str = "published", precision: str = "amp", device: str | None = None,
            threads: int = 2, steps: int = 2, top: int = 20, output: str = "benchmarks",
            keep_freed_memory: bool = True) -> str:
    """Where the time of one workflow goes: ``torch.profiler`` over ``steps`` steps after one warm-up step.

    Writes ``<output>/profile_<workflow>_<setting>_<precision>.txt`` (operators by self time) and returns it.
    """
    _check_counts(steps=steps, top=top)
    out = output_folder(output, BenchmarkError)  # before the work, which a bad folder would throw away
    step, _, _, dev = _build(workflow, setting, precision, device, threads, keep_freed_memory)
    step()  # warm-up: one-off allocations and kernel selection
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(int(steps)):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    text = (f"{WORKFLOWS[workflow][1]}, {setting} settings, {precision}, {steps} steps on {_machine()}, "
            f"{threads} threads\n\n" + prof.key_averages().table(sort_by=sort, row_limit=int(top)))
    path = out / f"profile_{workflow}_{setting}_{precision}.txt"
    path.write_text(text + "\n")
    print(text)  # noqa: T201 - the table is this command's output
    return str(path)


def layout(workflow: str, setting: str = "published", precision: str = "fp32", device: str | None = None,
           threads: int = 2, rounds: int = 3, keep_freed_memory: bool = True) -> dict:
    """Contiguous against channels-last for one workflow, timed alternately in one process.

    Both variants are built (same seed), stepped once untimed, then timed in ``rounds`` alternating rounds, so that
    other load on the machine slows both alike: the ratio stays meaningful on a shared CPU where absolute figures do
    not. Prints and returns the median seconds of each layout and their ratio.
    """
    _check_counts(rounds=rounds)
    steps, record = {}, {"workflow": workflow, "setting": setting, "precision": precision, "machine": _machine(),
                         "threads": int(threads)}
    for channels_last in (False, True):
        steps[channels_last], _, _, dev = _build(workflow, setting, precision, device, threads, keep_freed_memory,
                                                 layout=channels_last)
        steps[channels_last]()
    times = {False: [], True: []}
    for _ in range(int(rounds)):
        for channels_last, step in steps.items():
            times[channels_last] += _time(step, 0, 1, dev)[0]
    record["contiguous_s"], record["channels_last_s"] = (statistics.median(times[k]) for k in (False, True))
    record["speedup"] = record["contiguous_s"] / record["channels_last_s"]
    print(json.dumps(record))  # noqa: T201 - the comparison is this command's output
    return record


def one(workflow: str, setting: str = "published", precision: str = "amp", device: str | None = None,
        threads: int = 2, warmup: int = 2, repeats: int = 5, keep_freed_memory: bool = True) -> None:
    """Measure one workflow at one setting and precision in this process and print its JSON record."""
    print(json.dumps(measure(workflow, setting, precision, device, threads, warmup, repeats, keep_freed_memory)))  # noqa: T201


def measure(workflow: str, setting: str = "published", precision: str = "amp", device: str | None = None,
            threads: int = 2, warmup: int = 2, repeats: int = 5, keep_freed_memory: bool = True) -> dict:
    """Measure one workflow at one setting and precision in this process and return its record."""
    _check_counts(warmup=warmup, repeats=repeats)
    step, info, cfg, dev = _build(workflow, setting, precision, device, threads, keep_freed_memory)
    times, faults = _time(step, warmup, repeats, dev)
    record = {
        "workflow": workflow,
        "description": WORKFLOWS[workflow][1],
        "setting": setting,
        "shape": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "precision": precision,
        "device": str(dev),
        "threads": int(threads),
        "keep_freed_memory": bool(keep_freed_memory),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "peak_memory_mb": _peak_memory_mb(dev),
        "page_faults_per_step": round(faults),  # minor faults: memory the system maps in afresh
        **info,
    }
    return record


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
        bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
        cpu += f" ({'/'.join(bf16) if bf16 else 'no native bf16: no AMX, no AVX512-BF16'})"
    except (OSError, StopIteration):
        pass
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # the kernels of a smaller CPU, emulated: say so beside the figure
        cpu += f", oneDNN capped at {os.environ['ONEDNN_MAX_CPU_ISA']}"
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def run(workflows: str | Sequence[str] = "all", settings: str | Sequence[str] = "published,demo",
        precisions: str | Sequence[str] = "amp,fp32", device: str | None = None,
        threads: int = 2, warmup: int = 2, repeats: int = 5, output: str = "benchmarks", timeout: int = 1800,
        keep_freed_memory: bool = True, replace: bool = False) -> None:
    """Measure several workflows, each in a subprocess; write ``<output>/results.json`` and ``results.md``.

    Measurements already in ``<output>/results.json`` from this machine are kept, except those measured again.
    When that file holds another machine's measurements the run stops before measuring, unless ``replace`` is set
    (start a new table there). Raises :class:`BenchmarkError` for unknown names and, at the end, when any
    measurement failed (the others are written).
    """
    names = list(WORKFLOWS) if workflows == "all" else _names(workflows)
    setting_names, precision_names = _names(settings), _names(precisions)
    _check(names, setting_names, precision_names)
    _check_counts(threads=threads, warmup=warmup, repeats=repeats, timeout=timeout)
    combos = [(w, s, p) for w in names for s in setting_names for p in precision_names]
    out = output_folder(output, BenchmarkError)
    meta = {"machine": _machine(), "threads": threads, "date": time.strftime("%Y-%m-%d")}
    records = _earlier_records(out / "results.json", meta["machine"], replace)
    failed = []
    for i, (w, s, p) in enumerate(combos, 1):
        cmd = [sys.executable, __file__, "one", w, s, p, f"--threads={threads}", f"--warmup={warmup}",
               f"--repeats={repeats}", f"--keep_freed_memory={bool(keep_freed_memory)}"] + (
                  [f"--device={device}"] if device else [])
        logger.info(f"[{i}/{len(combos)}] measuring {w} {s} {p} ...")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.error(f"{w} {s} {p} took longer than --timeout {timeout} s; skipped")
            failed.append(f"{w} {s} {p}")
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            logger.error(f"{w} {s} {p} failed:\n{proc.stderr[-2000:]}")
            failed.append(f"{w} {s} {p}")
            continue
        rec = json.loads(lines[-1])
        logger.info(f"  {rec['median_s']:.3f} {rec['unit']}, peak {rec['peak_memory_mb']:.0f} MB")
        key = (w, s, p, rec["device"])
        records = [r for r in records if (r["workflow"], r["setting"], r["precision"], r["device"]) != key]
        records.append(rec)
        records.sort(key=_order)
        # written after every measurement: an interrupted run keeps what it measured
        (out / "results.json").write_text(json.dumps({"meta": meta, "results": records}, indent=2))
        (out / "results.md").write_text(to_markdown(records, meta))
    if len(failed) < len(combos):
        logger.info(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(combos)} measurements failed ({'; '.join(failed)}); "
                             "their errors are logged above")


def _earlier_records(path: Path, machine: str, replace: bool = False) -> list[dict]:
    """The measurements already in ``path`` when they were taken on ``machine``, else none.

    A run keeps the earlier measurements of its folder, except those it measures again. Measurements of another
    machine are not mixed with this one's, nor overwritten unless ``replace``: :class:`BenchmarkError` otherwise.
    """
    if not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text())
        other, results = previous.get("meta", {}).get("machine"), previous["results"]
    except (ValueError, KeyError, AttributeError) as e:
        if replace:
            return []
        raise BenchmarkError(f"{path} is not a results table of this script ({e!r}); pass another --output folder, "
                             "or --replace True to overwrite it") from None
    if other == machine:
        return list(results)
    if not replace:
        raise BenchmarkError(f"{path} holds the measurements of another machine ({other}); pass another --output "
                             "folder for this one's, or --replace True to start a new table there")
    logger.warning(f"{path} was measured on another machine ({other}); starting a new table for this one (--replace)")
    return []


def _names(value: str | Sequence[str]) -> list[str]:
    """A comma-separated list, or the tuple python-fire makes of ``a,b`` on the command line."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [v.strip() for v in items if v.strip()]


def _order(record: dict) -> tuple:
    """Table order: workflow as in WORKFLOWS, published before demo, AMP before fp32."""
    names = list(WORKFLOWS)
    w = names.index(record["workflow"]) if record["workflow"] in names else len(names)
    return w, record["setting"] != "published", record["precision"] != "amp", record["device"]


def format_seconds(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 s (GPU steps take milliseconds)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def to_markdown(records: list[dict], meta: dict) -> str:
    """A Markdown table of benchmark records."""
    lines = [
        f"Measured on {meta['machine']} with {meta['threads']} threads ({meta['date']}).",
        "",
        "| workflow | setting | shape | precision | median | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    plain_allocator = False
    for r in records:
        shape = ", ".join(f"{k} {v}" for k, v in r["shape"].items())
        prec = r["precision"] + (f" ({r['amp_dtype'].replace('torch.', '')})" if r.get("amp_dtype") not in (None, "None") else "")
        if r["precision"] == "fp32" and r.get("channels_last"):
            prec += ", channels-last"  # switch_us runs fp32 in channels-last; the other bundles only with AMP
        mark = "" if r.get("keep_freed_memory", False) else " *"
        plain_allocator |= bool(mark)
        gpu = " (GPU)" if str(r.get("device", "cpu")).startswith("cuda") else ""
        lines.append(f"| {r['description']} | {r['setting']} | {shape} | {prec} | {format_seconds(r['median_s'])} "
                     f"{r['unit']}{mark} | {r['peak_memory_mb'] / 1024:.2f} GB{gpu} |")
    if plain_allocator:
        lines += ["", "\\* measured with glibc's default allocator behaviour (`--keep_freed_memory False`, or before the "
                  "bundles kept freed memory), where each iteration faults its memory in again."]
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        fire_cli({"run": run, "one": one, "profile": profile, "layout": layout}, BenchmarkError)
    except BenchmarkError as e:
        logger.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
