# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The runtime every bundle shares, one module per concern.

- :mod:`.runtime`: device, mixed precision, memory format, CPU threads, the allocator setting.
- :mod:`.run_folder`: where a run writes, its lock and its ``FINISHED`` marker.
- :mod:`.schedules`: learning-rate factors.
- :mod:`.errors`: the bundles' error classes and the short reports of config and input errors.
- :mod:`.overrides`: the check of ``monai.bundle run`` command-line overrides.
- :mod:`.checkpoints`: atomic saving, weights loading, exact resume.
- :mod:`.progress`: progress lines with speed and ETA.
- :mod:`.keys`: batch keys and engine events.
- :mod:`.engine`: the trainers' shared machinery.
- :mod:`.sampling`: endless, replayable data streams.
- :mod:`.datalist`: datalist checks and loading.
- :mod:`.images2d`: 2D image data: reading and checking images, datalists, the two-stream loader.
- :mod:`.volumes`: 3D volume data: reading and checking volumes, datalists, inference lists, the slice dataset.
- :mod:`.intensity`: intensity scaling (2D images to [0, 1], volumes z-scored).
- :mod:`.inference`: the mixed-precision inferer wrapper, batch-norm folding, slice-wise inference of 2D networks on
  volumes.
- :mod:`.metrics` and :mod:`.reports`: segmentation metrics and the evaluation report handler.
- :mod:`.phantom_us` and :mod:`.phantom_3d`: the synthetic default datasets (2D ultrasound; 3D LA- and ACDC-like MRI).

The source is the repository's ``bundle_common/`` folder (outside the folder of bundles: each folder there is one).
``scripts/sync_common.py`` copies it into every bundle as ``scripts/common/``, so a bundle stays self-contained, and
``scripts/sync_common.py --check`` (run by the tests) reports any copy that differs. Edit the source, never a copy.
"""
