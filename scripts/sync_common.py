#!/usr/bin/env python
# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Copy the bundles' shared runtime, ``bundles/_common/``, into every bundle as ``scripts/common/``.

A bundle must stay self-contained (it runs from a plain copy of its folder and inside a Model Zoo zip), so each
carries a generated copy of the shared modules; this tool writes them, and ``--check`` reports every copy that
differs from its source (a test runs it). Each copy starts with a line saying it is generated and where to edit.

Usage::

    python scripts/sync_common.py            # write the copies
    python scripts/sync_common.py --check    # exit 1 and list the differences, write nothing
"""

from __future__ import annotations

import sys
from pathlib import Path

from cli_args import fire_cli

REPO = Path(__file__).resolve().parents[1]
SOURCE_NAME = "_common"
COPY_DIR = Path("scripts") / "common"


def header(name: str) -> str:
    """The first line of a generated copy of ``bundles/_common/<name>``."""
    return (f"# GENERATED from bundles/{SOURCE_NAME}/{name} by scripts/sync_common.py: edit that file, not this copy "
            "(python scripts/sync_common.py)\n")


def bundle_dirs(bundles: Path) -> list[Path]:
    """The bundle folders under ``bundles`` (those with ``configs/metadata.json``), sorted by name."""
    return sorted(p for p in bundles.iterdir() if p.is_dir() and (p / "configs" / "metadata.json").is_file())


def expected_copies(bundles: Path) -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    source = bundles / SOURCE_NAME
    modules = sorted(source.glob("*.py"))
    if not modules:
        raise FileNotFoundError(f"no modules in {source}")
    out: dict[Path, str] = {}
    for bundle in bundle_dirs(bundles):
        for module in modules:
            out[bundle / COPY_DIR / module.name] = header(module.name) + module.read_text(encoding="utf-8")
    return out


def differences(bundles: Path) -> list[str]:
    """One line per copy that is missing, differs from its source, or has no source any more."""
    expected = expected_copies(bundles)
    problems = []
    for path, text in expected.items():
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs from bundles/{SOURCE_NAME}/{path.name}: {path}")
    for bundle in bundle_dirs(bundles):
        for path in sorted((bundle / COPY_DIR).glob("*.py")):
            if path not in expected:
                problems.append(f"no source in bundles/{SOURCE_NAME}/ (a stale copy): {path}")
    return problems


def sync(check: bool = False, bundles: str | None = None) -> int:
    """Write (or with ``check``, verify) every bundle's ``scripts/common/`` copy of ``bundles/_common/``.

    Args:
        check: write nothing; list the copies that differ and return 1 if any does.
        bundles: the bundles folder (default: the repository's).

    Returns:
        the exit status: 0, or 1 when ``check`` found a difference.
    """
    root = Path(bundles) if bundles else REPO / "bundles"
    if check:
        problems = differences(root)
        for line in problems:
            print(line)
        if problems:
            print(f"{len(problems)} generated file(s) out of date: run python scripts/sync_common.py")
            return 1
        print(f"the common copies of {len(bundle_dirs(root))} bundles match bundles/{SOURCE_NAME}/")
        return 0
    expected = expected_copies(root)
    written = 0
    for path, text in expected.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written += 1
    for bundle in bundle_dirs(root):
        for path in sorted((bundle / COPY_DIR).glob("*.py")):
            if path not in expected:
                path.unlink()
                print(f"removed stale copy {path}")
    print(f"{written} file(s) written; {len(expected)} generated files in {len(bundle_dirs(root))} bundles")
    return 0


class SyncError(ValueError):
    """A bad option of the tool."""


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit status (0, 1 when ``--check`` found a difference, 2 on a usage error)."""
    try:
        return int(fire_cli(sync, SyncError, argv, serialize=lambda _: None))
    except (SyncError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
