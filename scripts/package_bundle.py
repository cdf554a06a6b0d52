# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Package a MONAI bundle folder as a deterministic Model Zoo zip archive.

Run as a file (a repository tool; it never imports a bundle's ``scripts`` package)::

    python scripts/package_bundle.py bundles/switch_us
    python scripts/package_bundle.py bundles/switch_us --out_dir dist --overwrite True
    python scripts/package_bundle.py bundles/switch_us --large_files_url https://host/switch_us/model.pt
    python scripts/package_bundle.py bundles/switch_us --weights False

The archive is ``<out_dir>/<name>_v<version>.zip`` (``name`` is the bundle folder's name, ``version`` comes
from ``configs/metadata.json``) and holds ``<name>/...``, the Zoo's archive form. Run outputs (``runs/``,
``data/``, ``predictions/``, ``eval/``, caches, ``*.pyc``, checkpoints other than ``models/model.pt``) are left
out. Entries are sorted and carry a fixed timestamp and fixed permissions, so packaging the same folder
twice gives byte-identical archives.

Weights (``models/model.pt``):

* default: included when present (a warning is logged when absent);
* ``--weights True``: required, a clear error when absent; ``--weights False``: left out;
* ``--large_files_url URL``: left out of the archive, which gets a ``large_files.yml`` instead naming
  ``models/model.pt``, the URL and the file's hash (``--hash_type md5`` or ``sha256``), the Model Zoo's
  convention for files above its size limit. The bundle folder itself is never modified.

Errors (not a bundle, no version, missing weights, an existing archive without ``--overwrite True``) are
logged without a traceback and the command exits with status 2.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from cli_args import fire_cli

LOG = logging.getLogger("package_bundle")

WEIGHTS = "models/model.pt"
"""The bundle-relative path of the trained weights (the Model Zoo's required file)."""

EXCLUDED_DIRS = frozenset(
    {
        "runs",
        "data",
        "predictions",
        "eval",
        "mlruns",
        "lightning_logs",
        "wandb",
        "__pycache__",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".git",
    }
)
"""Directory names left out at any depth: run outputs, generated data, caches."""

EXCLUDED_FILE_PATTERNS = ("*.pyc", "*.pyo", "*.swp", "*~", ".DS_Store", "*.tfevents.*", "events.out.*", "*.log")
"""File-name patterns left out at any depth."""

EXCLUDED_PATHS = frozenset({"configs/monailabel_train.json"})
"""Bundle-relative files that tools generate (MONAI Label writes its training config here)."""

LARGE_FILE_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
ZIP_DATE_TIME = (2022, 5, 30, 0, 0, 0)  # fixed timestamp of every entry (the Zoo's release script uses this date)
ZOO_FILE_LIMIT = 25 * 1024 * 1024  # the Model Zoo accepts no single file above 25 MB
HASH_TYPES = ("md5", "sha256")


class PackagingError(ValueError):
    """A bundle cannot be packaged as asked; the message says why."""


def file_hash(path: Path, hash_type: str = "md5") -> str:
    """Return the hex digest of a file.

    Args:
        path: the file.
        hash_type: ``md5`` or ``sha256``.

    Returns:
        The hex digest.
    """
    digest = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(bundle: Path) -> dict:
    """Load ``configs/metadata.json`` of a bundle folder, with clear errors.

    Args:
        bundle: the bundle folder.

    Returns:
        The metadata dictionary.

    Raises:
        PackagingError: the folder is absent, is not a bundle, or its metadata is unreadable or has no version.
    """
    if not bundle.is_dir():
        raise PackagingError(f"{bundle} is not a folder")
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise PackagingError(f"{bundle} is not a MONAI bundle: {meta_file} is missing")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackagingError(f"{meta_file} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise PackagingError(f"{meta_file} must hold a JSON object")
    version = meta.get("version")
    if not isinstance(version, str) or not version.strip():
        raise PackagingError(f"{meta_file} has no 'version' string")
    if any(c in version for c in "/\\ \t\n") or version in {".", ".."}:
        raise PackagingError(f"{meta_file}: version {version!r} cannot be used in a file name")
    return meta


def is_excluded(rel: str) -> bool:
    """Whether a bundle-relative POSIX path is a run output or cache that the archive leaves out.

    ``models/`` keeps only ``models/model.pt`` (other checkpoints and exports are run outputs).

    Args:
        rel: path relative to the bundle root, ``/``-separated.

    Returns:
        True when the file is left out.
    """
    parts = rel.split("/")
    if any(p in EXCLUDED_DIRS for p in parts[:-1]):
        return True
    if any(fnmatch.fnmatch(parts[-1], pat) for pat in EXCLUDED_FILE_PATTERNS):
        return True
    if rel in EXCLUDED_PATHS:
        return True
    return parts[0] == "models" and rel != WEIGHTS


def bundle_files(bundle: Path) -> Iterator[str]:
    """Yield the bundle-relative POSIX paths of the files an archive holds, sorted, weights included.

    Args:
        bundle: the bundle folder.

    Yields:
        Relative paths of regular files (symbolic links to files are followed) that are not run outputs.
    """
    found = []
    for root, dirs, files in os.walk(bundle):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        for name in files:
            full = Path(root) / name
            rel = full.relative_to(bundle).as_posix()
            if is_excluded(rel):
                continue
            if not full.is_file():
                LOG.warning("skipping %s: not a regular file", rel)
                continue
            found.append(rel)
    yield from sorted(found)


def large_files_yaml(url: str, hash_val: str, hash_type: str) -> str:
    """Return the text of a Model Zoo ``large_files.yml`` naming the weights.

    Args:
        url: where ``models/model.pt`` can be downloaded.
        hash_val: the weights' hex digest.
        hash_type: the digest's algorithm.

    Returns:
        YAML text.
    """
    return (
        "large_files:\n"
        f'  - path: "{WEIGHTS}"\n'
        f"    url: {json.dumps(url)}\n"
        f'    hash_val: "{hash_val}"\n'
        f'    hash_type: "{hash_type}"\n'
    )


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A ZipInfo with a fixed timestamp, permissions and platform, so archives do not depend on the host."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix
    info.external_attr = (0o100644 & 0xFFFF) << 16
    return info


def package(
    bundle: str,
    out_dir: str = "dist",
    weights: bool | None = None,
    large_files_url: str | None = None,
    hash_type: str = "md5",
    name: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``<out_dir>/<name>_v<version>.zip`` holding ``<name>/...``.

    Args:
        bundle: the bundle folder (holding ``configs/metadata.json``).
        out_dir: folder for the archive (created when absent).
        weights: ``None`` includes ``models/model.pt`` when present, ``True`` requires it, ``False`` leaves
            it out.
        large_files_url: when given, the weights are left out and ``large_files.yml`` names this URL and
            their hash; the weights must exist locally (their hash is recorded).
        hash_type: hash recorded in ``large_files.yml``: ``md5`` or ``sha256``.
        name: archive and top folder name; defaults to the bundle folder's name.
        overwrite: replace an existing archive of the same name.

    Returns:
        The path of the archive.

    Raises:
        PackagingError: the folder is not a bundle, weights are missing when needed, the archive exists
            without ``overwrite`` or an argument is invalid.
    """
    if weights is not None and not isinstance(weights, bool):
        raise PackagingError(f"--weights must be True or False (or left out), got {weights!r}")
    if not isinstance(overwrite, bool):
        raise PackagingError(f"--overwrite must be True or False, got {overwrite!r}")
    src = Path(str(bundle)).expanduser().resolve()
    meta = read_metadata(src)
    name = src.name if name is None else str(name)  # python-fire reads "--name 2" as an int
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise PackagingError(f"invalid bundle name {name!r}")
    if hash_type not in HASH_TYPES:
        raise PackagingError(f"hash_type must be one of {HASH_TYPES}, got {hash_type!r}")
    weights_file = src / WEIGHTS
    if large_files_url is not None:
        large_files_url = str(large_files_url).strip()
        if not large_files_url:
            raise PackagingError("--large_files_url is empty")
        if weights is True:
            raise PackagingError("--weights True and --large_files_url contradict each other")
        if not weights_file.is_file():
            raise PackagingError(f"{weights_file} is missing: its hash is needed for large_files.yml")
    elif weights is True and not weights_file.is_file():
        raise PackagingError(f"weights asked for but {weights_file} is missing (train the bundle or pass --weights False)")

    files = list(bundle_files(src))
    existing_large = [f for f in files if f in LARGE_FILE_NAMES]
    include_weights = weights is not False and large_files_url is None
    if not include_weights and WEIGHTS in files:
        files.remove(WEIGHTS)
    if include_weights and WEIGHTS not in files:
        if existing_large:
            LOG.info("%s is absent; the bundle's own %s refers to it", WEIGHTS, existing_large[0])
        else:
            LOG.warning("%s is absent: the archive holds no weights (the Model Zoo requires them)", WEIGHTS)
    extra: dict[str, bytes] = {}
    if large_files_url is not None:
        if existing_large:
            raise PackagingError(f"{src / existing_large[0]} exists; remove it or package without --large_files_url")
        digest = file_hash(weights_file, hash_type)
        extra["large_files.yml"] = large_files_yaml(large_files_url, digest, hash_type).encode()
        LOG.info("weights left out; large_files.yml names %s (%s %s)", large_files_url, hash_type, digest)
    for rel in files:
        size = (src / rel).stat().st_size
        if size > ZOO_FILE_LIMIT:
            LOG.warning("%s is %.1f MB, above the Model Zoo's 25 MB limit per file (use --large_files_url)",
                        rel, size / 2**20)

    out = Path(str(out_dir)).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise PackagingError(f"--out_dir {out} is a file, not a folder; pass another --out_dir")
    target = out / f"{name}_v{meta['version']}.zip"
    if target.exists() and not overwrite:
        raise PackagingError(f"{target} exists; pass --overwrite True to replace it")
    if out == src or src in out.parents:
        LOG.warning("the archive is written inside the bundle folder %s", src)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackagingError(f"cannot create --out_dir {out}: {e.strerror or e}") from e

    entries = sorted([(rel, src / rel) for rel in files] + [(rel, None) for rel in extra])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for rel, path in entries:
                data = extra[rel] if path is None else path.read_bytes()
                zf.writestr(_zip_info(f"{name}/{rel}"), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    LOG.info("wrote %s: %d files, sha256 %s", target, len(entries), file_hash(target, "sha256"))
    return str(target)


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python scripts/package_bundle.py BUNDLE [options]``.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on a packaging error.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        fire_cli(package, PackagingError, argv, serialize=lambda _: None)
    except PackagingError as e:
        LOG.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
