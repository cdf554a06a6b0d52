# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The converters behind ``scripts/prepare_data.py``, split by source family.

Imported as ``dataprep`` (the tools' folder is on ``sys.path`` when they run as files; it is not the
bundles' ``scripts`` package):

* :mod:`dataprep.common`: the error, items, readers, the split and the writers every converter shares;
* :mod:`dataprep.us2d`: 2D ultrasound layouts (``busi``, ``ddti``, ``hc18``, ``switch``, ``folder``);
* :mod:`dataprep.volumes`: 3D volumes (``la``, ``acdc``, ``nifti``) and their downsampling.
"""
