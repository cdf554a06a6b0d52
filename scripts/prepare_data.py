# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Convert the dataset layouts users have into the prepared format of ``docs/dataset_format.md``.

Run as a file (it is a repository tool, not a package, and imports no bundle code)::

    python scripts/prepare_data.py busi   --source ../shared/data/BUSI --output data/busi
    python scripts/prepare_data.py ddti   --source ../shared/data/DDTI --output data/ddti
    python scripts/prepare_data.py ddti   --source ../shared/data/DDTI,../shared/data/DDTI_more --output data/ddti_all
    python scripts/prepare_data.py hc18   --source ../shared/data/HC18 --output data/hc18
    python scripts/prepare_data.py switch --source /data/BUSI --output data/busi_switch --labeled_ratio 0.05
    python scripts/prepare_data.py folder --images imgs/ --labels masks/ --output data/mine
    python scripts/prepare_data.py la     --source ../shared/data/LA --output data/la --num_labeled 8
    python scripts/prepare_data.py acdc   --source ../shared/data/ACDC --output data/acdc --labeled_patients 3
    python scripts/prepare_data.py nifti  --images imagesTr/ --labels labelsTr/ --output data/mine3d
    python scripts/prepare_data.py nifti  --msd Task02_Heart/dataset.json --output data/heart

Every command writes ``images/<id>``, ``labels/<id>`` and ``datalist.json`` under ``--output`` and
returns the path of ``datalist.json``. A run writes all or nothing: every listed source file is checked
first (present, readable header or HDF5 keys, image and label sizes), the dataset is written into a
temporary sibling folder ``<output>.partial-<pid>``, and that folder takes the output's place only when
it is complete; a failed run leaves the output folder exactly as it was. The output folder must be
empty (or absent) unless ``--overwrite True``, which replaces the dataset an earlier run prepared there
as a whole (the two are never mixed). A non-empty folder that is not such a dataset (no
``datalist.json``, or files this tool does not write) is refused, never deleted.

``busi`` and ``ddti`` take several source folders of one layout separated by commas (``BUSI`` and
``BUSI_more``): they are read as one dataset and split together, so no folder is copied by hand.

Splits:

* Sources without given splits (``busi``, ``ddti``, ``hc18``, ``folder``, ``nifti``) are split by
  case with a seeded shuffle: ``--test_ratio`` and ``--val_ratio`` are fractions of all cases,
  ``--labeled_ratio`` a fraction of the remaining training cases, the rest is unlabelled. Every
  list asked for (ratio > 0) gets at least one case when there are enough cases.
* ``switch`` keeps the file order of ``train.txt`` (the first floor(ratio * N) names are labelled).
* ``la`` and ``acdc`` use their list files. When a list for validation or test is absent,
  ``--test_from`` / ``--val_from`` decide: ``none`` (default: the list stays empty and a warning is
  logged), ``val`` / ``test`` (reuse the other evaluation list: the two lists then share cases, which
  is recorded as ``split.test_from`` / ``split.val_from`` in the datalist), or ``split`` (divide the
  available evaluation cases into validation and test with the seed, in proportion to
  ``--val_ratio`` : ``--test_ratio``).

Bad inputs raise :class:`DatasetPreparationError` (a ``ValueError``) naming the offending file; the
command line prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from dataprep.common import (
    LIST_KEYS,
    DatasetPreparationError,
    Item,
    Meta,
    read_grey,
    read_label_indices,
    read_mask_foreground,
    split_cases,
    validate_splits,
    write_2d,
    write_3d,
)
from dataprep.us2d import IMAGE_2D_SUFFIXES, busi, ddti, folder, hc18, switch
from dataprep.volumes import (
    ACDC_LABELS,
    ACDC_PRESETS,
    IMAGE_3D_SUFFIXES,
    LA_SPACING,
    acdc,
    downsample_volume,
    la,
    nifti,
)

from cli_args import fire_cli

__all__ = [
    "ACDC_LABELS",
    "ACDC_PRESETS",
    "COMMANDS",
    "IMAGE_2D_SUFFIXES",
    "IMAGE_3D_SUFFIXES",
    "LA_SPACING",
    "LIST_KEYS",
    "DatasetPreparationError",
    "Item",
    "Meta",
    "acdc",
    "busi",
    "ddti",
    "downsample_volume",
    "folder",
    "hc18",
    "la",
    "main",
    "nifti",
    "read_grey",
    "read_label_indices",
    "read_mask_foreground",
    "split_cases",
    "switch",
    "validate_splits",
    "write_2d",
    "write_3d",
]

LOG = logging.getLogger("prepare_data")

COMMANDS: dict[str, Callable[..., Path]] = {
    "busi": busi,
    "ddti": ddti,
    "hc18": hc18,
    "switch": switch,
    "folder": folder,
    "la": la,
    "acdc": acdc,
    "nifti": nifti,
}


def main() -> None:
    """Command line entry point (``python scripts/prepare_data.py <command> ...``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        fire_cli(COMMANDS, DatasetPreparationError, serialize=lambda _: None)
    except DatasetPreparationError as exc:
        LOG.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
