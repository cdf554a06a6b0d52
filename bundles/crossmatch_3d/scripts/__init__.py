# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""CrossMatch bundle code: networks, masks, losses, transforms, inferers, engines and handlers.

Configs refer to these modules by dotted ``_target_`` paths (``scripts.trainer.CrossMatchTrainer``), so this
package deliberately imports nothing eagerly: importing ``scripts`` stays cheap and side-effect free.
"""

from __future__ import annotations
