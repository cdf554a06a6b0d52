# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Code of the mgcc_us bundle (imported as ``scripts`` by the bundle's configs)."""
