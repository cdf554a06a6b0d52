# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Switch self-training alone, started from saved pre-training weights, in AMP or in fp32.

The experiment behind the README's "Mixed precision against fp32" paragraph on the Switch demo: does the precision
of the self-training stage decide the demo's final Dice when the starting weights are fixed? It runs the demo
overlay with ``pretrain_iterations 0`` from a ``model_pretrain.pt`` of an earlier demo run (fresh optimiser state;
the learning rate set to the self-training restart's, ``learning_rate * selftrain_lr_scale``),
then the test evaluation, in a copy of the bundle under ``--workdir``. Variants: ``amp``, the default bf16/fp16
autocast, and ``fp32`` (``--amp False``).

Usage (from the repository root)::

    python benchmarks/selftrain_from_weights.py bundles/switch_us/runs/demo/models/model_pretrain.pt \\
        --variant fp32 --seed 3 --workdir /tmp/selftrain_probe

``--dataset_dir /tmp/qd/busi`` runs it on prepared real data (the quality protocol's ``us2d`` budget is the demo
overlay's). Prints the test Dice; the run folder is ``<workdir>/switch_us/runs/selftrain_<variant>_s<seed>``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from cli_args import fire_cli  # noqa: E402 - the repository's scripts folder, put on the path above

VARIANTS = ("amp", "fp32")


def main(
    weights: str,
    variant: str = "amp",
    seed: int = 1,
    workdir: str = "/tmp/selftrain_probe",
    dataset_dir: str | None = None,
) -> None:
    """Self-train the Switch demo from ``weights`` with ``variant`` and print the test Dice.

    ``dataset_dir``: a folder of ``scripts/prepare_data.py`` (default: the demo's phantoms), e.g. the BUSI data
    of the quality protocol, whose ``us2d`` budget is the demo overlay's.
    """
    # SystemExit with a message: one line on stderr and exit status 1, not a traceback
    if variant not in VARIANTS:
        raise SystemExit(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    weights_path = Path(weights).resolve()
    if not weights_path.is_file():
        raise SystemExit(f"no weights at {weights_path}: give the model_pretrain.pt of an earlier Switch run")
    data = None if dataset_dir is None else str(Path(dataset_dir).expanduser().resolve())
    if data is not None and not (Path(data) / "datalist.json").is_file():
        raise SystemExit(f"{data} holds no datalist.json: prepare it with scripts/prepare_data.py first")
    logging.basicConfig(level=logging.INFO)
    bundle = Path(workdir) / "switch_us"
    if not bundle.is_dir():
        shutil.copytree(REPO / "bundles" / "switch_us", bundle, ignore=shutil.ignore_patterns("runs"))
    os.chdir(bundle)
    sys.path.insert(0, str(bundle))
    from monai.bundle import ConfigParser

    name = f"selftrain_{variant}_s{seed}"
    shutil.rmtree(bundle / "runs" / name, ignore_errors=True)
    parser = ConfigParser()
    parser.read_config(["configs/train.yaml", "configs/demo.yaml"])
    # a single-stage schedule ignores selftrain_lr_scale: start at the learning rate the two-stage run restarts at
    lr = parser["learning_rate"] * parser["selftrain_lr_scale"]
    parser.update({"bundle_root": ".", "run_name": name, "seed": seed, "amp": variant != "fp32",
                   "pretrain_iterations": 0, "learning_rate": lr})
    if data is not None:
        parser["dataset_dir"] = data
    parser.get_parsed_content("initialize")
    from scripts.common.runtime import resolve_amp_dtype

    if variant == "amp" and resolve_amp_dtype(parser.get_parsed_content("device"), True) is None:
        raise SystemExit("--variant amp needs native bf16 (AVX512-BF16 or AMX) or CUDA: here it would run fp32.")
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True)["model"])
    parser.get_parsed_content("train#trainer").run()
    parser.get_parsed_content("test#evaluator").run()
    summary = json.loads((bundle / "runs" / name / "evaluation" / "metrics_summary.json").read_text())
    dice = summary["metrics"]["dice"]["mean"]
    print(f"{variant} seed {seed}: test Dice {dice:.4f}")  # noqa: T201 - the command's result


if __name__ == "__main__":
    fire_cli(main, SystemExit)
