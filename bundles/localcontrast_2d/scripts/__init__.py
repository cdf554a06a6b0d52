# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Bundle code of Chaitanya et al. 2023 (local contrastive loss with pseudo-label self-training): the networks,
transforms, pseudo-labels and the modules built on them.

Configs refer to these modules by dotted ``_target_`` paths (``scripts.networks...``), so this package deliberately
imports nothing eagerly: importing ``scripts`` stays cheap and side-effect free.
"""

from __future__ import annotations
