# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The MGCC bundle's unlabelled stream: real unlabelled images, images the latent diffusion model generated, or both.

Everything else about the data (the prepared format, its checks, the two-stream loader) is the shared runtime's
(:mod:`scripts.common.images2d`).
"""

from __future__ import annotations

from .common.errors import ConfigValueError, DataError

__all__ = ["UNLABELED_SOURCES", "unlabeled_items"]

UNLABELED_SOURCES = ("real", "synthetic", "both")


def unlabeled_items(datalists: dict[str, list[dict]], source: str = "real") -> list[dict]:
    """The unlabelled training items for ``source``.

    Args:
        datalists: the lists of the datalist (``unlabeled`` and, once ``configs/generate.yaml`` ran, ``synthetic``).
        source: ``real`` (the dataset's unlabelled images), ``synthetic`` (the generated ones) or ``both``.

    Raises:
        ConfigValueError: an unknown ``source``.
        DataError: the chosen images are missing (no generated images yet, or a dataset without unlabelled images).
    """
    if source not in UNLABELED_SOURCES:
        raise ConfigValueError(f"unlabeled_source = {source!r}: choose one of {', '.join(UNLABELED_SOURCES)}.")
    real = list(datalists.get("unlabeled") or [])
    synthetic = list(datalists.get("synthetic") or [])
    if source != "real" and not synthetic:
        raise DataError(
            f"unlabeled_source {source} needs generated images, and the datalist has no 'synthetic' list: run "
            "python -m monai.bundle run --config_file configs/generate.yaml first (or pass --synthetic_datalist "
            "<the datalist.json it wrote>)."
        )
    if source == "synthetic":
        return synthetic
    if source == "both":
        return real + synthetic
    return real
