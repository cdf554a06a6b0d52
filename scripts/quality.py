# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The semi-supervised gain under a fixed budget: supervised-only against each semi-supervised method.

Every method of a dataset trains from the same prepared dataset (same labelled cases, same seed), with the same
number of iterations at the same reduced resolution, in its own run of the bundle, and is evaluated on the
dataset's ``test`` list by the bundle's own test evaluation. The results are collected into a table.

Protocols (the budget fits a 2-core CPU; ``--iterations`` scales every budget):

===========  ====================  =====================================================================
protocol     bundle                methods and budget
===========  ====================  =====================================================================
``us2d``     ``switch_us``         supervised, BCP, Switch; 128x128 images, batch 4 (+4 unlabelled);
                                   1000 pre-training + 400 self-training iterations (supervised: 1400)
``mgcc``     ``mgcc_us``           supervised, MGCC with real unlabelled images, MGCC with images generated
                                   by the bundle's latent diffusion model (its demo-size generation stage,
                                   run once per output); 128x128 images, batch 4 (+4 unlabelled), 1400
                                   iterations, widths 8-128
``acdc``     ``crossmatch_3d``     supervised, CrossMatch; 2D U-Net on 96x96 slices, batch 4, 2000 iterations
``acdc_lc``  ``localcontrast_2d``  supervised, local contrastive self-training; slices resized to 96x96 (as
                                   ``acdc``), batch 4 (+ 5 + 5 contrastive slices), 1000 supervised
                                   iterations + 2 joint rounds of 500 (supervised: 2000); and CrossMatch
                                   from ``crossmatch_3d`` on the same prepared dataset and seed (the
                                   ``acdc`` protocol's settings, 2000 iterations)
``la``       ``crossmatch_3d``     supervised, CrossMatch; V-Net with 8 base filters, 48x48x32 crops,
                                   batch 2, 1500 iterations, sliding-window test on whole volumes; the data
                                   prepared with ``prepare_data.py la --downsample 2`` (1.25 mm)
===========  ====================  =====================================================================

The 3D budgets were 400 (ACDC) and 300 (LA) iterations on full-resolution LA until 2026-12-03: there CrossMatch
fell below supervised-only, and on LA it collapsed to background (validation Dice 0.29 at iteration 100, 0.0 at
200, with 5x the budget too): its unsupervised terms act from the first iteration (no warm-up, as published) and a
48x48x32 crop of a 0.625 mm volume is mostly background, so the distilled pseudo-labels were mostly background.

Usage (from the repository root; ``scripts/prepare_data.py`` writes the prepared folders)::

    python scripts/quality.py run us2d --dataset_dir /data/ddti_prepared --output quality/ddti
    python scripts/quality.py run acdc --dataset_dir /data/acdc_prepared --output quality/acdc
    python scripts/quality.py run us2d /data/ddti_prepared quality/ddti_kbs --overrides keep_best_stage=True
    python scripts/quality.py table quality/ddti quality/busi quality/acdc quality/la    # one Markdown table
    python scripts/quality.py compare quality/busi quality/busi_fp32    # two runs of one protocol, method by method
    python scripts/quality.py seeds quality/busi quality/busi_s2     # one protocol over seeds: the training spread
    python scripts/quality.py seeds quality/busi quality/busi_s2 --against quality/busi_fp32,quality/busi_s2_fp32
    python scripts/quality.py seeds quality/busi_kbs quality/busi_s2_kbs --supervised quality/busi,quality/busi_s2

``run`` writes ``<output>/<method>/`` (the bundle copy's run folder with its evaluation), ``quality.json`` and
``quality.md``. Besides the difference of the summary Dice ("Dice gain"), the table gives the gain paired image by
image (volume by volume) with its standard error and the number of pairs: on a small test set that error says
which differences the set can resolve. A method whose run already finished is not trained again (its results are read back), so an
interrupted protocol continues where it stopped; a finished run is only read back under the settings it ran with
(``<output>/<method>.settings.json``): other budgets, data, seed or precision stop with an error naming them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cli_args import fire_cli, output_folder

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("quality")

# table columns: summary keys (a per-class key is ``<metric>_<class>``); "jaccard" is the IoU column of crossmatch_3d
# runs written before both bundles named it "iou"
METRICS = ("dice", "iou", "jaccard", "hd95", "asd")


class QualityError(RuntimeError):
    """A protocol could not run: bad arguments, a missing dataset or a failed training run."""


@dataclass(frozen=True)
class ExternalMethod:
    """A method of a protocol that runs from another bundle (CrossMatch beside the local contrastive bundle).

    Attributes:
        bundle: the bundle folder name under ``bundles/``.
        configs: its config files.
        budget: overrides that set its budget; scaled by ``--iterations`` like the protocol's.
        overrides: its other fixed overrides.
    """

    bundle: str
    configs: tuple[str, ...]
    budget: Mapping[str, int]
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """A fixed-budget comparison on one bundle.

    Attributes:
        bundle: the bundle folder name under ``bundles/``.
        configs: config files every method uses (the method's overlay is appended).
        methods: method name -> extra config files (``[]``: the bundle's own semi-supervised method).
        budget: overrides that set the budget; integer values are scaled by ``--iterations``.
        scaled: the keys of ``budget`` that count iterations.
        supervised_total: for supervised-only in a two-stage bundle, the key that receives the whole budget.
        overrides: other fixed overrides (resolution, workers, logging).
        min_spacing_mm: the finest voxel size the budget suits; finer data get a warning (``None``: no check).
        method_overrides: per method, overrides of its own (``mgcc_synthetic``: the generated unlabelled images).
        generation: config files of a stage that runs once, before the first method of ``needs_generation``.
        generation_overrides: that stage's overrides.
        needs_generation: the methods that read the generation stage's output.
        external: methods that run from another bundle, on the same prepared dataset and seed.
    """

    bundle: str
    configs: tuple[str, ...]
    methods: Mapping[str, tuple[str, ...]]
    budget: Mapping[str, int]
    overrides: Mapping[str, str] = field(default_factory=dict)
    supervised_total: str | None = None
    min_spacing_mm: float | None = None
    method_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    generation: tuple[str, ...] = ()
    generation_overrides: Mapping[str, str] = field(default_factory=dict)
    needs_generation: tuple[str, ...] = ()
    external: Mapping[str, ExternalMethod] = field(default_factory=dict)

    def all_methods(self) -> list[str]:
        """The protocol's methods: the bundle's own, then the external ones."""
        return [*self.methods, *self.external]


PROTOCOLS: dict[str, Protocol] = {
    "us2d": Protocol(
        bundle="switch_us",
        configs=("configs/train.yaml", "configs/demo.yaml"),
        methods={
            "supervised": ("configs/baseline_supervised.yaml",),
            "bcp": ("configs/baseline_bcp.yaml",),
            "switch": (),
        },
        budget={"pretrain_iterations": 1000, "selftrain_iterations": 400},
        overrides={"image_size": "128", "batch_size": "4", "val_interval": "100", "num_workers": "0", "max_pictures": "4"},
        supervised_total="selftrain_iterations",
    ),
    "mgcc": Protocol(
        bundle="mgcc_us",
        configs=("configs/train.yaml", "configs/demo.yaml"),
        methods={
            "supervised": ("configs/baseline_supervised.yaml",),
            "mgcc": (),
            "mgcc_synthetic": (),
        },
        budget={"max_iterations": 1400},
        overrides={"image_size": "128", "batch_size": "4", "width": "8", "mixer_depth": "1", "val_interval": "100",
                   "ramp_epoch": "7", "num_workers": "0", "max_pictures": "4"},
        method_overrides={"mgcc_synthetic": {"unlabeled_source": "synthetic", "generate_run_name": "generate"}},
        generation=("configs/generate.yaml", "configs/demo.yaml"),
        generation_overrides={"generate_run_name": "generate", "num_samples": "200"},
        needs_generation=("mgcc_synthetic",),
    ),
    "acdc": Protocol(
        bundle="crossmatch_3d",
        configs=("configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"),
        methods={"supervised": ("configs/baseline.yaml",), "crossmatch": ()},
        budget={"max_iterations": 2000},
        overrides={"image_size": "96", "batch_size": "4", "val_interval": "100", "num_workers": "0"},
    ),
    "acdc_lc": Protocol(
        bundle="localcontrast_2d",
        configs=("configs/train.yaml", "configs/demo.yaml"),
        methods={"supervised": ("configs/baseline_supervised.yaml",), "localcontrast": ()},
        budget={"supervised_iterations": 1000, "round_iterations": 500},
        overrides={"rounds": "2", "fit": "resize", "image_size": "96", "batch_size": "4",
                   "contrast_size": "5", "val_interval": "100", "num_workers": "0", "max_pictures": "4"},
        external={"crossmatch": ExternalMethod(
            bundle="crossmatch_3d",
            configs=("configs/train.yaml", "configs/acdc.yaml", "configs/demo.yaml"),
            budget={"max_iterations": 2000},
            overrides={"image_size": "96", "batch_size": "4", "val_interval": "100", "num_workers": "0"},
        )},
    ),
    "la": Protocol(
        bundle="crossmatch_3d",
        configs=("configs/train.yaml", "configs/demo.yaml"),
        methods={"supervised": ("configs/baseline.yaml",), "crossmatch": ()},
        budget={"max_iterations": 1500},
        overrides={"val_interval": "100", "num_workers": "0"},
        min_spacing_mm=1.0,
    ),
}


def method_overrides(protocol: Protocol, method: str, scale: float = 1.0) -> dict[str, str]:
    """The command-line overrides of one method: the fixed ones, then the budget scaled by ``scale``.

    Supervised-only in a two-stage bundle has no pre-training stage, so it gets the whole budget (pre-training +
    self-training iterations) as its single stage: every method sees the same number of iterations.
    """
    if not scale > 0:
        raise QualityError(f"--iterations must be a positive scale factor, got {scale}.")
    if method in protocol.external:
        ext = protocol.external[method]
        budget = {k: max(1, round(v * scale)) for k, v in ext.budget.items()}
        return {**ext.overrides, **{k: str(v) for k, v in budget.items()}}
    budget = {k: max(1, round(v * scale)) for k, v in protocol.budget.items()}
    if method == "supervised" and protocol.supervised_total is not None:
        total = sum(budget.values())
        budget = {k: (total if k == protocol.supervised_total else 0) for k in budget}
    own = dict(protocol.method_overrides.get(method, {}))
    return {**protocol.overrides, **{k: str(v) for k, v in budget.items()}, **own}


def extra_overrides(protocol: Protocol, overrides: str | Mapping | None) -> dict[str, str]:
    """The ``--overrides`` of ``run`` as command-line values for every method's bundle run.

    Args:
        protocol: the protocol; its budget keys and the keys ``run`` sets from its own options are refused.
        overrides: ``key=value[,key=value]`` text, or a dict (python-fire reads ``--overrides
            "{keep_best_stage: True, fds_beta: 0.02}"`` as one; use that form for values holding commas).

    Returns:
        key -> value text, in the order given; the bundle checks each key and value type when it starts.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        pairs = {}
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise QualityError(f"--overrides: {item!r} is not key=value (e.g. --overrides keep_best_stage=True).")
            pairs[key.strip()] = value.strip()
        overrides = pairs
    if not isinstance(overrides, Mapping):
        raise QualityError(f"--overrides must be key=value[,key=value] or a dict, got {overrides!r}.")
    own = {"dataset_dir": "the dataset_dir argument", "run_name": "--methods", "amp": "--amp", "seed": "--seed"}
    result = {}
    for key, value in overrides.items():
        key = str(key).removeprefix("--")
        if key in own:
            raise QualityError(f"--overrides cannot set {key}: the protocol sets it (use {own[key]}).")
        if key in protocol.budget:
            raise QualityError(f"--overrides cannot set {key}: every method gets the same budget (scale it with "
                               "--iterations).")
        result[key] = str(value)  # python literals (True, [1, 2]) as the bundle's command line reads them
    return result


def _bundle_name(root: Path) -> str | None:
    """The ``name`` in a bundle's ``configs/metadata.json`` (``None`` when it has none)."""
    try:
        return json.loads((root / "configs" / "metadata.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def _copy_bundle(name: str, dst: Path) -> Path:
    """Copy ``bundles/<name>`` to ``dst`` once; an existing copy is reused only if it is of the same bundle."""
    if (dst / "configs").is_dir():
        have, want = _bundle_name(dst), _bundle_name(REPO / "bundles" / name)
        if have != want:
            raise QualityError(f"{dst.parent} holds the runs of another bundle ({have!r}, not {want!r}): use another "
                               "output folder for this protocol.")
        return dst
    shutil.copytree(REPO / "bundles" / name, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        "runs", "data", "models", "eval", "predictions", "__pycache__"))
    return dst


def _run_method(bundle: Path, configs: Sequence[str], overrides: Mapping[str, str], log_file: Path) -> None:
    config_arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg]
    for k, v in overrides.items():
        cmd += [f"--{k}", v]
    # the bundle first, then whatever the caller's PYTHONPATH already holds (packages installed outside the venv)
    path = os.pathsep.join(p for p in (str(bundle), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    logger.info("running: %s (log: %s)", " ".join(cmd), log_file)
    with open(log_file, "w") as log:
        proc = subprocess.run(cmd, cwd=bundle, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise QualityError(f"the run failed (exit code {proc.returncode}); the end of {log_file}:\n{tail}")


def read_summary(run_dir: Path) -> dict[str, float]:
    """The mean of every metric in ``<run_dir>/evaluation/metrics_summary.json``."""
    path = run_dir / "evaluation" / "metrics_summary.json"
    if not path.exists():
        raise QualityError(f"{path} does not exist: the run did not reach its test evaluation.")
    metrics = json.loads(path.read_text())["metrics"]
    return {k: (math.nan if v["mean"] is None else float(v["mean"])) for k, v in metrics.items()}


def table_columns(results: Sequence[Mapping[str, float]]) -> list[str]:
    """Table columns: Dice and its per-class values (first-seen order), IoU (Jaccard), HD95 and ASD.

    The per-class values of the other metrics, the millimetre (``*_mm*``) and the pooled-HD95 variants stay in
    ``quality.json``. The bundles write the IoU as ``iou``; the ``jaccard`` of crossmatch_3d runs written before
    that is shown in the same column (the same quantity).
    """
    keys = list(dict.fromkeys(k for r in results for k in r))
    cols = [k for k in keys if k == "dice"] + [k for k in keys if k.startswith("dice_") and "_mm" not in k]
    if any(k in ("iou", "jaccard") for k in keys):
        cols.append("iou")
    return cols + [m for m in ("hd95", "asd") if m in keys]


def _value(metrics: Mapping[str, float], column: str) -> float:
    v = metrics.get(column, metrics.get("jaccard", math.nan) if column == "iou" else math.nan)
    return math.nan if v is None else float(v)


def read_per_item_dice(run_dir: Path) -> dict[str, float]:
    """Each test image's or volume's Dice from ``<run_dir>/evaluation/metrics_per_{image,volume}.csv``.

    Returns an empty dict when the run has no per-item file; values may be NaN (an image whose prediction and
    label are both empty, under the default ``empty_policy: skip``).
    """
    for name in ("metrics_per_image.csv", "metrics_per_volume.csv"):
        path = run_dir / "evaluation" / name
        if path.is_file():
            with path.open(newline="") as f:
                return {row["id"]: float(row["dice"]) if row.get("dice") not in (None, "") else math.nan
                        for row in csv.DictReader(f)}
    return {}


def paired_gain(run_dir: Path, base_dir: Path) -> dict | None:
    """The Dice gain of one run over another, paired image by image: mean, standard error and count.

    Only the test items both runs scored (finite Dice in both) are paired, so the mean can differ from the
    difference of the two summary means when an item is scored by one run only (such as a false positive on an
    image without a lesion, which ``empty_policy: skip`` scores 0 for one and leaves out for the other).
    ``None`` when either run has no per-item file or fewer than two items pair up.
    """
    run, base = read_per_item_dice(Path(run_dir)), read_per_item_dice(Path(base_dir))
    diffs = [run[k] - base[k] for k in run if k in base and math.isfinite(run[k]) and math.isfinite(base[k])]
    if len(diffs) < 2:
        return None
    return {"mean": statistics.fmean(diffs), "se": statistics.stdev(diffs) / math.sqrt(len(diffs)), "n": len(diffs)}


def _row_paired_gain(row: Mapping, base: Mapping) -> dict | None:
    """:func:`paired_gain` of two result rows (``None`` when either has no run folder)."""
    if not row.get("run_dir") or not base.get("run_dir"):
        return None
    return paired_gain(Path(row["run_dir"]), Path(base["run_dir"]))


def _format_paired(gain: Mapping | None) -> str:
    return f"{100 * gain['mean']:+.1f} ± {100 * gain['se']:.1f} ({gain['n']})" if gain else ""


def _baseline(rows: Sequence[Mapping], row: Mapping) -> Mapping | None:
    """The supervised-only row of ``row``'s dataset from the same protocol run (``output``), if any."""
    return next((s for s in rows if s["method"] == "supervised" and s["dataset"] == row["dataset"]
                 and s.get("output") == row.get("output")), None)


def add_paired_gains(rows: Sequence[dict]) -> None:
    """Set ``paired_gain`` (see :func:`paired_gain`) on every non-supervised row whose runs are still on disk."""
    for r in rows:
        base = _baseline(rows, r)
        if base is None or r["method"] == "supervised":
            continue
        gain = _row_paired_gain(r, base)
        if gain is not None:
            r["paired_gain"] = gain


def markdown_table(rows: Sequence[Mapping]) -> str:
    """A Markdown table of ``{"dataset", "method", "metrics", ...}`` rows; Dice gain over supervised-only.

    With ``paired_gain`` in the rows (:func:`add_paired_gains`) a last column gives the image-by-image gain and its
    standard error, which says how much of the gain the size of the test set can resolve.
    """
    cols = table_columns([r["metrics"] for r in rows])
    paired = any("paired_gain" in r for r in rows)
    head = "| dataset | method | " + " | ".join(cols) + " | Dice gain |" + (" paired gain ± SE (n) |" if paired else "")
    lines = [head, "|" + "---|" * (len(cols) + 3 + paired)]
    for r in rows:
        base = _baseline(rows, r)
        gain = ""
        if base is not None and r["method"] != "supervised" and "dice" in r["metrics"]:
            gain = f"{100 * (r['metrics']['dice'] - base['metrics']['dice']):+.1f}"
        cells = []
        for c in cols:
            v = _value(r["metrics"], c)
            cells.append("" if math.isnan(v) else (f"{v:.4f}" if c.startswith(("dice", "iou")) else f"{v:.2f}"))
        line = f"| {r['dataset']} | {r['method']} | " + " | ".join(cells) + f" | {gain} |"
        if paired:
            paired_cell = _format_paired(r.get("paired_gain"))
            line += f" {paired_cell} |" if paired_cell else " |"
        lines.append(line)
    return "\n".join(lines)


def run(
    protocol: str,
    dataset_dir: str,
    output: str,
    methods: str | Sequence[str] | None = None,
    iterations: float = 1.0,
    seed: int | None = None,
    amp: bool = True,
    name: str | Sequence[str] | None = None,
    overrides: str | Mapping | None = None,
) -> dict:
    """Train and evaluate every method of ``protocol`` on a prepared dataset under the same budget.

    Args:
        protocol: ``us2d`` (switch_us: BUSI, DDTI, HC18, any 2D set), ``mgcc`` (mgcc_us), ``acdc`` or ``la``
            (crossmatch_3d), ``acdc_lc`` (localcontrast_2d and crossmatch_3d).
        dataset_dir: a folder written by ``scripts/prepare_data.py``.
        output: the results folder (a bundle copy, one run folder per method, ``quality.json``/``quality.md``).
        methods: a subset of the protocol's methods (comma-separated or a list; default all).
        iterations: scale factor on the protocol's iteration budget (1.0 = the documented budget).
        seed: the seed of every method (default: the bundle's).
        amp: mixed precision (bf16 autocast on this CPU) or fp32.
        name: the dataset name in the table (default: the dataset folder's name).
        overrides: more config overrides for every method, as ``key=value[,key=value]`` or a dict (see
            :func:`extra_overrides`); they change the protocol, so its outputs record them.

    Returns:
        The results written to ``quality.json``.
    """
    if protocol not in PROTOCOLS:
        raise QualityError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
    proto = PROTOCOLS[protocol]
    data = Path(dataset_dir).expanduser().resolve()
    if not (data / "datalist.json").is_file():
        raise QualityError(f"{data} holds no datalist.json: prepare it with scripts/prepare_data.py first.")
    if proto.min_spacing_mm is not None:
        _warn_if_finer(data / "datalist.json", proto.min_spacing_mm, protocol)
    chosen = proto.all_methods() if methods is None else _as_list(methods)
    unknown = [m for m in chosen if m not in proto.all_methods()]
    if unknown or not chosen:
        raise QualityError(f"unknown method(s) {unknown} for {protocol}; choose from {proto.all_methods()}.")
    # every argument is checked before the output folder is touched
    budgets = {m: method_overrides(proto, m, iterations) for m in chosen}
    extra = extra_overrides(proto, overrides)
    seed = _as_seed(seed)
    out = output_folder(output, QualityError, "output").resolve()
    bundles = {proto.bundle: _copy_bundle(proto.bundle, out / "bundle")}
    for ext in {proto.external[m].bundle for m in chosen if m in proto.external}:
        bundles[ext] = _copy_bundle(ext, out / f"bundle_{ext}")
    # python-fire reads `--name "BUSI, fp32"` as a tuple and `--name 2024` as a number: the table wants the text
    dataset = (", ".join(map(str, name)) if isinstance(name, (tuple, list)) else str(name)) if name else data.name
    rows = []
    for i, method in enumerate(chosen, 1):
        ext = proto.external.get(method)
        bundle = bundles[ext.bundle if ext else proto.bundle]
        method_args = {**budgets[method], **(extra if ext is None else {}), "dataset_dir": str(data),
                       "run_name": method, "amp": str(bool(amp))}
        if seed is not None:
            method_args["seed"] = str(seed)
        run_dir = bundle / "runs" / method
        configs = list(ext.configs) if ext else [*proto.configs, *proto.methods[method]]
        start = time.time()
        settings_file = out / f"{method}.settings.json"
        settings = {"configs": configs, "overrides": method_args}
        if (run_dir / "FINISHED").exists():
            _check_same_settings(settings_file, settings, method)
            logger.info("[%d/%d] %s: finished earlier, reading its results", i, len(chosen), method)
            seconds = _earlier_seconds(out / "quality.json", method)
        else:
            if method in proto.needs_generation:
                _run_generation(proto, bundle, data, seed, out)
            logger.info("[%d/%d] %s on %s", i, len(chosen), method, dataset)
            settings_file.write_text(json.dumps(settings, indent=2) + "\n")
            _run_method(bundle, configs, method_args, out / f"{method}.log")
            seconds = round(time.time() - start, 1)
        metrics = read_summary(run_dir)
        logger.info("[%d/%d] %s: Dice %.4f%s", i, len(chosen), method, metrics.get("dice", math.nan),
                    f" in {seconds:.0f} s" if seconds else "")
        command = f"cd {bundle} && python -m monai.bundle run --config_file \"{configs}\" " + " ".join(
            f"--{k} {v}" for k, v in method_args.items())
        rows.append({"dataset": dataset, "method": method, "metrics": metrics, "seconds": seconds,
                     "run_dir": str(run_dir), "output": str(out), "command": command})
    result = {"protocol": protocol, "dataset_dir": str(data), "iterations_scale": iterations, "amp": bool(amp),
              "overrides": extra, "rows": rows}
    add_paired_gains(rows)
    (out / "quality.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    table = markdown_table(rows)
    (out / "quality.md").write_text(table + "\n")
    logger.info("\n%s\nwritten: %s, %s", table, out / "quality.json", out / "quality.md")
    return result


def _run_generation(proto: Protocol, bundle: Path, data: Path, seed: int | None, out: Path) -> None:
    """The protocol's generation stage (once per output: a finished one is reused)."""
    name = proto.generation_overrides.get("generate_run_name", "generate")
    if (bundle / "runs" / name / "FINISHED").exists():
        logger.info("generation stage: finished earlier, reusing runs/%s", name)
        return
    args = {**proto.generation_overrides, "dataset_dir": str(data)}
    if seed is not None:
        args["seed"] = str(seed)
    logger.info("generation stage (%s) on %s", " + ".join(proto.generation), data)
    _run_method(bundle, proto.generation, args, out / "generation.log")


def _as_seed(seed: int | str | None) -> int | None:
    """A non-negative integer seed (python-fire passes ``--seed 2`` as an int, ``--seed 2x`` as text)."""
    if seed is None:
        return None
    try:
        value = int(str(seed).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise QualityError(f"--seed must be a non-negative integer, got {seed!r}.")
    return value


def _earlier_seconds(path: Path, method: str) -> float | None:
    """The training time an earlier ``run`` into the same folder recorded for ``method`` (``None`` if unknown)."""
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("rows", [])
    return next((r.get("seconds") for r in rows if r.get("method") == method), None)


def _check_same_settings(path: Path, settings: Mapping, method: str) -> None:
    """Refuse to report a finished run under settings (budget, data, seed, precision) other than its own."""
    if not path.is_file():
        logger.warning("%s: no record of the settings it ran with (written by older versions); assuming these", method)
        return
    earlier = json.loads(path.read_text())
    if earlier != json.loads(json.dumps(settings)):
        before, now = earlier["overrides"], settings["overrides"]
        changes = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted({**before, **now})
                   if before.get(k) != now.get(k)]
        if earlier["configs"] != list(settings["configs"]):
            changes.append(f"configs {earlier['configs']} -> {list(settings['configs'])}")
        raise QualityError(
            f"{method} finished earlier in {path.parent} with other settings ({'; '.join(changes)}); use another "
            "output folder, or delete that run to train it again."
        )


def _warn_if_finer(datalist_path: Path, min_spacing_mm: float, protocol: str) -> None:
    """Warn when a dataset's voxels are finer than the protocol's budget was set for."""
    datalist = json.loads(datalist_path.read_text())
    spacings = [datalist.get("spacing")] + [e.get("spacing") for e in datalist.get("labeled", [])]
    finest = min((min(s) for s in spacings if s), default=None)
    if finest is not None and finest < min_spacing_mm:
        logger.warning("%s has %.3g mm voxels; the %s protocol's crops and budget were set for %.3g mm or coarser "
                       "(prepare it with --downsample); at this resolution its crops hold little of the structure",
                       datalist_path.parent, finest, protocol, min_spacing_mm)


def _read_output(output: str) -> dict:
    """The ``quality.json`` of a ``run`` output, its rows tagged with that output (``output``)."""
    path = Path(output) / "quality.json"
    if not path.is_file():
        raise QualityError(f"{path} does not exist: run `python scripts/quality.py run ... --output {output}` first.")
    result = json.loads(path.read_text())
    result["output"] = str(Path(output).expanduser().resolve())
    result["rows"] = [{**r, "output": result["output"]} for r in result["rows"]]
    return result


def _read_rows(output: str) -> list[dict]:
    """The result rows of a ``run`` output, each tagged with that output (``output``)."""
    return _read_output(output)["rows"]


def _emit(text: str, save: str | None) -> str:
    """Print a command's table (its output) and write it to ``save`` if given."""
    if save:
        if Path(save).is_dir():
            raise QualityError(f"--save {save} is a folder; give the file to write, such as {Path(save) / 'table.md'}")
        output_folder(Path(save).expanduser().absolute().parent, QualityError, "the folder of --save")
        Path(save).write_text(text + "\n")
    print(text)  # noqa: T201 - the table is this command's output
    return text


def table(*outputs: str, save: str | None = None) -> str:
    """One Markdown table from the ``quality.json`` of several ``run`` outputs (written to ``save`` if given)."""
    # each output's rows compare with that output's supervised-only row, even where dataset names repeat
    rows = [r for o in outputs for r in _read_rows(o)]
    add_paired_gains(rows)
    return _emit(markdown_table(rows), save)


def compare(output: str, base: str, method: str | None = None, save: str | None = None) -> str:
    """Method by method, the Dice of one ``run`` output against another on the same test list (AMP against fp32,
    one seed against another): both summary means, their difference, and the difference paired image by image
    with its standard error (written to ``save`` if given).

    With ``method`` (such as ``supervised``), every method of ``output`` is compared with that one method of
    ``base`` instead: an ablation run with ``--methods switch,bcp --overrides ...`` against the supervised-only
    run of an earlier output of the same seed, without training the baseline again.
    """
    loaded = [_read_output(o) for o in (output, base)]
    _check_one_protocol(loaded)
    _warn_other_overrides(loaded)
    results = [{r["method"]: r for r in o["rows"]} for o in loaded]
    if method is not None:
        if method not in results[1]:
            raise QualityError(f"{base} has no {method!r} row (it holds {', '.join(results[1]) or 'none'}).")
        pairs = [(m, results[1][method]) for m in results[0]]
    else:
        pairs = [(m, results[1][m]) for m in results[0] if m in results[1]]
    if not pairs:
        raise QualityError(f"{output} and {base} have no method in common.")
    base_name = f"{base} ({method})" if method else base
    lines = [f"| method | Dice {output} | Dice {base_name} | difference | paired ± SE (n) |", "|---|---|---|---|---|"]
    for m, b in pairs:
        a = results[0][m]
        da, db = a["metrics"].get("dice", math.nan), b["metrics"].get("dice", math.nan)
        lines.append(f"| {m} | {da:.4f} | {db:.4f} | {100 * (da - db):+.1f} | {_format_paired(_row_paired_gain(a, b))} |")
    return _emit("\n".join(lines), save)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    """A command-line list: comma-separated text or a sequence (python-fire hands over either)."""
    if value is None:
        return []
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [str(v) for v in value]


def _mean_se(values: Sequence[float]) -> str:
    """``mean ± standard error`` of per-run values in Dice points."""
    return f"{statistics.fmean(values):+.1f} ± {statistics.stdev(values) / math.sqrt(len(values)):.1f}"


def _check_one_protocol(results: Sequence[Mapping]) -> None:
    """Refuse ``run`` outputs (``_read_output``) of different protocols or budgets; warn on different datasets."""
    for key, what in (("protocol", "protocols"), ("iterations_scale", "budgets (--iterations)")):
        if len({r.get(key) for r in results if r.get(key) is not None}) > 1:
            raise QualityError(f"these outputs ran different {what}: "
                               + "; ".join(f"{r['output']}: {r.get(key)}" for r in results)
                               + ". Compare runs of one protocol.")
    folders = sorted({r["dataset_dir"] for r in results if r.get("dataset_dir")})
    if len(folders) > 1:
        logger.warning("these outputs read different dataset folders (%s); the comparison assumes the same data",
                       ", ".join(folders))


def _warn_other_overrides(results: Sequence[Mapping]) -> None:
    """Warn when ``run`` outputs whose rows are set side by side ran with different ``--overrides``."""
    if len({json.dumps(r.get("overrides") or {}, sort_keys=True) for r in results}) > 1:
        logger.warning("these outputs ran with different --overrides (%s): the rows differ in those settings too",
                       "; ".join(f"{r['output']}: {r.get('overrides') or {}}" for r in results))


def seeds(
    *outputs: str,
    against: str | Sequence[str] | None = None,
    supervised: str | Sequence[str] | None = None,
    save: str | None = None,
) -> str:
    """Repeated runs of one protocol (one ``run`` output per seed): the spread that training adds.

    The paired standard error of ``table`` and ``compare`` holds the models fixed and only says how well the test
    set measures them; another seed trains other models. Per method this lists the Dice of every output, their
    mean and standard deviation over the outputs, and (methods other than supervised-only) the gain over each
    output's own supervised-only row with its mean and standard error over the outputs.

    With ``against`` (as many outputs, in the same seed order, of another setting such as ``--amp False``) a
    second table pairs the runs seed by seed: per method, each seed's Dice difference (``outputs`` minus
    ``against``), their mean and standard error over seeds, and in how many seeds ``outputs`` is lower. This is the
    test of a setting that changes no arithmetic on purpose (mixed precision): it is judged against the training
    spread, not against one pair of runs. Both tables are written to ``save`` if given.

    With ``supervised`` (one output per seed, in the same order) an output without a supervised-only row, such as a
    re-run of one method with other ``--overrides``, takes that seed's supervised-only Dice from there for its gain.
    """
    if len(outputs) < 2:
        raise QualityError(f"seeds needs the outputs of at least two runs of one protocol, got {len(outputs)}.")
    others, baselines = _as_list(against), _as_list(supervised)
    for option, given in (("--against", others), ("--supervised", baselines)):
        if given and len(given) != len(outputs):
            raise QualityError(f"{option} needs one output per seed in the same order: {len(outputs)} outputs, "
                               f"{len(given)} given.")
    loaded = [_read_output(o) for o in [*outputs, *others, *baselines]]
    _check_one_protocol(loaded)
    _warn_other_overrides(loaded[: len(outputs) + len(others)])  # --supervised lends only its baseline rows
    dice = [{r["method"]: r["metrics"].get("dice", math.nan) for r in o["rows"]} for o in loaded]
    results, base = dice[: len(outputs)], dice[len(outputs) : len(outputs) + len(others)]
    for i, extra in enumerate(dice[len(outputs) + len(others) :]):
        if "supervised" not in results[i]:
            if "supervised" not in extra:
                raise QualityError(f"{baselines[i]} (--supervised) has no supervised-only row.")
            results[i] = {"supervised": extra["supervised"], **results[i]}
    methods = [m for m in results[0] if all(m in r for r in results + base)]
    if not methods:
        raise QualityError(f"{', '.join([*outputs, *others])} have no method in common.")
    n = len(outputs)
    lines = [f"| method | Dice of each of the {n} runs | mean | SD | gain of each run | mean gain ± SE |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        dice = [r[m] for r in results]
        gain_cells = ["", ""]
        if m != "supervised" and "supervised" in methods:
            gains = [100 * (r[m] - r["supervised"]) for r in results]
            gain_cells = [", ".join(f"{g:+.1f}" for g in gains), _mean_se(gains)]
        lines.append(f"| {m} | {', '.join(f'{d:.4f}' for d in dice)} | {statistics.fmean(dice):.4f} | "
                     f"{100 * statistics.stdev(dice):.1f} | " + " | ".join(gain_cells) + " |")
    if base:
        lines += ["", f"| method | Dice of the {n} runs against | difference of each seed | mean ± SE | seeds lower |",
                  "|---|---|---|---|---|"]
        for m in methods:
            diffs = [100 * (r[m] - b[m]) for r, b in zip(results, base)]
            lines.append(f"| {m} | {', '.join(f'{b[m]:.4f}' for b in base)} | "
                         f"{', '.join(f'{d:+.1f}' for d in diffs)} | {_mean_se(diffs)} | "
                         f"{sum(d < 0 for d in diffs)} of {n} |")
    return _emit("\n".join(lines), save)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        commands = {"run": run, "table": table, "compare": compare, "seeds": seeds}
        fire_cli(commands, QualityError, serialize=lambda _: None)
    except QualityError as e:
        logger.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
