# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Paired bundle runs compared stage by stage: training loss, validation Dice and test Dice.

The analysis behind the README's "Mixed precision against fp32" paragraph: for runs that differ in one setting only
(``--amp True`` against ``--amp False``, same seed), where along training do the two part? For each pair it reads
the TensorBoard scalars the bundles write (``train_loss`` every iteration, ``val_mean_dice`` every validation) and
``evaluation/metrics_summary.json``, then prints, per window of iterations and per validation, the mean of the
pairwise differences (A - B), its standard error over the pairs and how many pairs have A above B.

Usage (from the repository root; ``{seed}`` is replaced by each seed)::

    python benchmarks/paired_runs.py "bundles/switch_us/runs/p2_s{seed}_True" \\
        "bundles/switch_us/runs/p2_s{seed}_False" --seeds 1,2,3,4,5,6,7 --windows 0,100,200,400,1000,1400
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from cli_args import fire_cli  # noqa: E402 - the repository's scripts folder, put on the path above


def read_scalars(run_dir: Path, *tags: str) -> dict[str, dict[int, float]]:
    """``tag -> {step: value}`` of TensorBoard scalar tags over all event files of ``run_dir`` (read once)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    have = acc.Tags()["scalars"]
    for tag in tags:
        if tag not in have:
            raise KeyError(f"{run_dir} has no TensorBoard scalar {tag!r} (it has {have}).")
    return {tag: {e.step: float(e.value) for e in acc.Scalars(tag)} for tag in tags}


def read_test_dice(run_dir: Path) -> float:
    """The test Dice of a finished run (``evaluation/metrics_summary.json``)."""
    metrics = json.loads((run_dir / "evaluation" / "metrics_summary.json").read_text())["metrics"]
    return float(metrics["dice"]["mean"])


def paired_stats(diffs: Sequence[float]) -> tuple[float, float, int]:
    """Mean of the differences, its standard error and the number of positive differences."""
    d = np.asarray(diffs, dtype=float)
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    return float(d.mean()), se, int((d > 0).sum())


def _ints(value: int | str | Sequence[int]) -> list[int]:
    """``1,2,3`` (or the int or tuple python-fire makes of it) as a list of ints."""
    if isinstance(value, int):
        return [value]
    items = value.split(",") if isinstance(value, str) else value
    try:
        return [int(v) for v in items if str(v).strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {value!r}.") from None


def compare(pattern_a: str, pattern_b: str, seeds: int | str | Sequence[int],
            windows: int | str | Sequence[int] = (0, 100, 1000),
            loss_tag: str = "train_loss", val_tag: str = "val_mean_dice") -> str:
    """Compare runs ``pattern_a`` against ``pattern_b`` (``{seed}`` in both) over ``seeds``; returns the report.

    Args:
        pattern_a, pattern_b: run folders with ``{seed}`` where the seed goes.
        seeds: the seeds (comma-separated or a list).
        windows: iteration boundaries of the training-loss windows (comma-separated or a list).
        loss_tag, val_tag: the TensorBoard tags of the training loss and of the validation Dice.
    """
    seeds, bounds = _ints(seeds), _ints(windows)
    if len(seeds) < 2 or len(bounds) < 2 or bounds != sorted(bounds):
        raise ValueError("need at least two seeds and two increasing window boundaries.")
    runs = [(Path(pattern_a.format(seed=s)), Path(pattern_b.format(seed=s))) for s in seeds]
    lines = [f"A = {pattern_a}, B = {pattern_b}, seeds {seeds}", "", "| quantity | mean A | mean B | A - B | SE | A > B |",
             "|---|---|---|---|---|---|"]

    def row(name: str, a: Sequence[float], b: Sequence[float]) -> None:
        mean, se, above = paired_stats([x - y for x, y in zip(a, b)])
        lines.append(f"| {name} | {np.mean(a):.4f} | {np.mean(b):.4f} | {mean:+.4f} | {se:.4f} | {above}/{len(a)} |")

    scalars = [(read_scalars(a, loss_tag, val_tag), read_scalars(b, loss_tag, val_tag)) for a, b in runs]
    losses = [(sa[loss_tag], sb[loss_tag]) for sa, sb in scalars]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        win = [([v for k, v in la.items() if lo < k <= hi], [v for k, v in lb.items() if lo < k <= hi]) for la, lb in losses]
        if any(not wa or not wb for wa, wb in win):
            lines.append(f"| {loss_tag}, iterations {lo + 1}-{hi} | (not in every run) | | | | |")
            continue
        row(f"{loss_tag}, iterations {lo + 1}-{hi}", [np.mean(wa) for wa, _ in win], [np.mean(wb) for _, wb in win])
    vals = [(sa[val_tag], sb[val_tag]) for sa, sb in scalars]
    for step in sorted(set.intersection(*(set(va) & set(vb) for va, vb in vals))):
        row(f"{val_tag}, step {step}", [va[step] for va, _ in vals], [vb[step] for _, vb in vals])
    row("test Dice", [read_test_dice(a) for a, _ in runs], [read_test_dice(b) for _, b in runs])
    report = "\n".join(lines)
    print(report)  # noqa: T201 - the report is this command's output
    return report


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        fire_cli(compare, ValueError, serialize=lambda _: None)
    except (FileNotFoundError, KeyError, ValueError) as e:
        # KeyError's str() quotes its message: use its argument
        logging.getLogger("paired_runs").error("%s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        sys.exit(2)


if __name__ == "__main__":
    main()
