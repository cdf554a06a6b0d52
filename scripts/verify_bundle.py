# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Check a MONAI bundle folder the way the Model Zoo's CI does, offline and on CPU.

Run as a file (a repository tool; bundle code only ever runs in subprocesses with ``cwd`` = the bundle and
``PYTHONPATH`` = the bundle, so any bundle folder works, e.g. an unzipped package)::

    python scripts/verify_bundle.py bundles/switch_us
    python scripts/verify_bundle.py /tmp/unzipped/switch_us --checks files,version,metadata
    python scripts/verify_bundle.py bundles/switch_us --schema other_schema.json
    python scripts/verify_bundle.py bundles/switch_us --override "{'num_classes': 3}" --checks net_in_out
    python scripts/verify_bundle.py bundles/switch_us --onnx_python /path/to/onnx-venv/bin/python

Checks (``--checks`` selects a comma-separated subset; all run by default):

``files``
    ``configs/metadata.json`` and ``LICENSE``; ``models/model.pt`` or a ``large_files.{yml,yaml,json}``
    entry naming it (with a URL); ``configs/inference.{json,yaml,yml}``.
``version``
    ``version`` and ``changelog`` exist and ``version`` is a key of ``changelog``; with
    ``--model_info``, ``<name>_v<version>`` is not already released.
``pins``
    ``monai_version``, ``pytorch_version``, ``numpy_version`` and every entry of
    ``required_packages_version`` / ``optional_packages_version`` form an exact ``name==version`` pin
    that pip accepts (PEP 440, no ranges, wildcards or local tags such as ``+cu121``).
``metadata``
    ``python -m monai.bundle verify_metadata`` against the schema file ``--schema`` (default: the
    vendored 2024 schema, ``scripts/data/meta_schema_20240725.json``), pre-placed with its hash so
    nothing is downloaded.
``net_in_out``
    ``python -m monai.bundle verify_net_in_out``: the network ``network_def`` of the inference
    config, fed a random input of the metadata's shape, returns the metadata's channels and dtype.
``torchscript``
    ``python -m monai.bundle ckpt_export ... --key_in_ckpt model`` into a temporary folder, then the
    TorchScript file is reloaded with ``torch.jit.load`` in a process without the bundle on the path and
    its output equals the eager network's (same weights, same random input).
``onnx``
    ``python -m monai.bundle onnx_export`` into a temporary folder, then onnxruntime runs the ONNX model
    and its output equals the eager network's within tolerance. ``--onnx_python`` names another
    interpreter (with torch, monai, onnx, onnxscript, onnxruntime) when the main environment cannot
    hold the ONNX packages.

Each check logs ``PASS``/``FAIL``/``SKIP`` with the reason; the exit status is 1 when any check fails
and 2 on a usage error. The bundle's files are never modified: exports and the schema copy go to a
temporary folder (``--keep_dir`` keeps them in a folder of your choice instead). Checks run side by side on
the available cores (``--jobs``; ``--jobs 1`` runs them one after another).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli_args import fire_cli

LOG = logging.getLogger("verify_bundle")

DEFAULT_SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"  # vendored beside the tools
DEFAULT_SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
CHECKS = ("files", "version", "pins", "metadata", "net_in_out", "torchscript", "onnx")
START_ORDER = ("files", "version", "pins", "torchscript", "metadata", "net_in_out", "onnx")  # with --jobs > 1
INFERENCE_CONFIGS = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
LARGE_FILE_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
WEIGHTS = "models/model.pt"
CORE_PINS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}
PACKAGE_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


class UsageError(ValueError):
    """The command line is invalid (unknown check, missing bundle, unreadable schema...)."""


class CheckFailedError(Exception):
    """A check failed; the message is the reason shown to the user."""


@dataclass
class Result:
    """Outcome of one check."""

    name: str
    status: str  # PASS, FAIL or SKIP
    reason: str


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _md5(path: Path) -> str:
    """Return the md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_metadata(bundle: Path) -> dict:
    """Load ``configs/metadata.json`` or raise :class:`CheckFailedError` saying what is wrong."""
    path = bundle / "configs" / "metadata.json"
    if not path.is_file():
        raise CheckFailedError(f"{path} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckFailedError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckFailedError(f"{path} does not hold a JSON object")
    return meta


def _tail(text: str, lines: int = 1) -> str:
    """The last non-empty lines of a subprocess's output, the usual place of its error message."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:]) if kept else "(no output)"


def _error_line(text: str, limit: int = 400) -> str:
    """The most informative part of a failed subprocess's output: the last exception line (with the lines that
    continue it when it ends with a colon), followed by the exception that directly caused it when there is one
    (MONAI's "Failed to instantiate component" wraps the bundle's own message), else the last lines."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    found = [i for i, ln in enumerate(kept) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt)\b.*:", ln)]
    if not found:
        return _tail(text, 2)

    def message_at(i: int) -> str:
        return " ".join(kept[i : i + 3]) if kept[i].endswith(":") else kept[i]

    message = message_at(found[-1])
    if len(found) > 1 and any("direct cause of the following exception" in ln for ln in kept[found[-2] : found[-1]]):
        message += f" (caused by {message_at(found[-2])})"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _large_file_entries(bundle: Path) -> tuple[Path | None, list[dict]]:
    """The bundle's large-files file and its entries (``[]`` when absent or unreadable)."""
    for name in LARGE_FILE_NAMES:
        path = bundle / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            try:
                if path.suffix == ".json":
                    data = json.loads(text)
                else:
                    import yaml

                    data = yaml.safe_load(text)
            except Exception as e:  # noqa: BLE001 - any parse error is reported as a failed check
                raise CheckFailedError(f"{path} cannot be parsed: {e}") from e
            entries = data.get("large_files") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise CheckFailedError(f"{path} has no 'large_files' list")
            return path, entries
    return None, []


def _schema_error_path(meta: dict, schema_file: Path) -> str | None:
    """Where in the metadata the schema's most relevant error is (``verify_metadata``'s message omits it)."""
    try:
        import jsonschema

        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(meta))
    except Exception:  # noqa: BLE001 - only a hint; the check has already failed with monai's message
        return None
    return None if error is None else "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


# ----------------------------------------------------------------------------------------------------------------
# the verifier


class BundleVerifier:
    """Runs the checks on one bundle folder; bundle code only runs in subprocesses.

    Args:
        bundle: the bundle folder.
        work: a scratch folder for the schema copy, exports and arrays.
        schema: the metadata schema file.
        config: inference config file(s) relative to the bundle (default: the first of
            ``configs/inference.{json,yaml,yml}`` that exists).
        override: config overrides (id -> value) applied to every network check.
        net_id: the network's id in the config.
        key_in_ckpt: key of the weights in the checkpoint.
        ckpt: checkpoint file (default ``<bundle>/models/model.pt``).
        random_weights: use a freshly initialised network instead of the checkpoint.
        model_info: a Zoo ``model_info.json``; the version must not be released there yet.
        onnx_python: interpreter for the ONNX export and onnxruntime.
        device: device of the network checks.
        rtol: relative tolerance of the TorchScript comparison.
        atol: absolute tolerance of the TorchScript comparison.
        onnx_rtol: relative tolerance of the ONNX comparison.
        onnx_atol: absolute tolerance of the ONNX comparison.
        timeout: seconds allowed to each subprocess.
    """

    def __init__(
        self,
        bundle: Path,
        work: Path,
        schema: Path,
        config: Sequence[str] | None,
        override: dict[str, Any],
        net_id: str,
        key_in_ckpt: str,
        ckpt: Path | None,
        random_weights: bool,
        model_info: Path | None,
        onnx_python: str,
        device: str,
        rtol: float,
        atol: float,
        onnx_rtol: float,
        onnx_atol: float,
        timeout: int,
    ) -> None:
        self.bundle = bundle
        self.work = work
        self.schema = schema
        self.config = list(config) if config else None
        self.override = override
        self.net_id = net_id
        self.key_in_ckpt = key_in_ckpt
        self.ckpt = ckpt
        self.random_weights = random_weights
        self.model_info = model_info
        self.onnx_python = onnx_python
        self.device = device
        self.rtol, self.atol = rtol, atol
        self.onnx_rtol, self.onnx_atol = onnx_rtol, onnx_atol
        self.timeout = timeout
        self._reference: tuple[Path, Path, Path] | None = None
        self._shared_lock = threading.RLock()  # checkpoint()/reference() are shared by parallel checks

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _run(self, cmd: list[str], with_bundle: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run a subprocess; ``with_bundle`` puts the bundle (only) on ``PYTHONPATH`` and runs in it."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the bundle
        if with_bundle:
            env["PYTHONPATH"] = str(self.bundle)
        LOG.debug("running %s", " ".join(cmd))
        try:
            return subprocess.run(
                cmd,
                cwd=cwd or (self.bundle if with_bundle else self.work),
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise CheckFailedError(f"timed out after {self.timeout} s: {' '.join(cmd[:4])} ...") from e

    def _monai(self, command: str, args: dict[str, Any], python: str | None = None) -> str:
        """Run ``python -m monai.bundle <command> --args_file <json>`` in the bundle; return its output."""
        args_file = self.work / f"{command}_args.json"
        args_file.write_text(json.dumps(args, indent=1))
        proc = self._run([python or sys.executable, "-m", "monai.bundle", command, "--args_file", str(args_file)])
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise CheckFailedError(f"monai.bundle {command} failed: {_error_line(out)}")
        return out

    def _worker(self, name: str, args: dict[str, Any], python: str | None = None, with_bundle: bool = True) -> dict:
        """Run one of this file's workers in a subprocess; return the JSON it prints last."""
        cmd = [python or sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, name, json.dumps(args)]
        proc = self._run(cmd, with_bundle=with_bundle)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise CheckFailedError(_error_line(out))
        for line in reversed(proc.stdout.strip().splitlines()):
            if line.startswith(WORKER_RESULT):
                return json.loads(line[len(WORKER_RESULT):])
        raise CheckFailedError(f"worker {name} printed no result: {_tail(out, 2)}")

    def config_files(self) -> list[str]:
        """Absolute paths of the inference config(s)."""
        if self.config:
            files = [self.bundle / c for c in self.config]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckFailedError(f"config file(s) not found: {', '.join(missing)}")
            return [str(f) for f in files]
        for rel in INFERENCE_CONFIGS:
            if (self.bundle / rel).is_file():
                return [str(self.bundle / rel)]
        raise CheckFailedError(f"no {'/'.join(INFERENCE_CONFIGS)} in the bundle")

    def _net_args(self) -> dict[str, Any]:
        """Arguments shared by the monai.bundle network commands."""
        cfg = self.config_files()
        return {
            "net_id": self.net_id,
            "meta_file": str(self.bundle / "configs" / "metadata.json"),
            "config_file": cfg if len(cfg) > 1 else cfg[0],
            "bundle_root": str(self.bundle),
            **self.override,
        }

    def checkpoint(self) -> Path:
        """The checkpoint the export checks load (random weights are written once into the scratch folder)."""
        if self.random_weights:
            path = self.work / "random_model.pt"
            with self._shared_lock:
                if path.exists():
                    return path
                self._worker("random_weights", {"net": self._net_args(), "key_in_ckpt": self.key_in_ckpt,
                                                "out": str(path)})
            return path
        path = self.ckpt or self.bundle / WEIGHTS
        if not path.is_file():
            hint = ""
            if _large_file_entries(self.bundle)[0] is not None:
                hint = (" (listed in large_files: fetch it with `python -m monai.bundle download_large_files "
                        f"--bundle_path {self.bundle}`)")
            raise CheckFailedError(f"checkpoint {path} is missing{hint}; or pass --random_weights True")
        return path

    def reference(self) -> tuple[Path, Path, Path]:
        """Random input, eager output and the weights used, computed once in a bundle subprocess."""
        with self._shared_lock:
            if self._reference is None:
                ckpt = self.checkpoint()
                x_file, y_file = self.work / "input.npy", self.work / "eager_output.npy"
                self._worker("reference", {"net": self._net_args(), "ckpt": str(ckpt),
                                           "key_in_ckpt": self.key_in_ckpt, "device": self.device,
                                           "input": str(x_file), "output": str(y_file)})
                self._reference = (x_file, y_file, ckpt)
            return self._reference

    # -- checks ----------------------------------------------------------------------------------------------

    def check_files(self) -> str:
        """Required files of the Zoo: metadata, LICENSE, weights (or large_files entry), inference config."""
        missing = [rel for rel in ("configs/metadata.json", "LICENSE") if not (self.bundle / rel).is_file()]
        notes = []
        if not (self.bundle / WEIGHTS).is_file():
            lf_path, entries = _large_file_entries(self.bundle)
            named = [e for e in entries if isinstance(e, dict) and str(e.get("path", "")).lstrip("./") == WEIGHTS]
            if not named:
                missing.append(WEIGHTS + (f" (not in {lf_path.name} either)" if lf_path else " (nor a large_files.yml naming it)"))
            elif not named[0].get("url"):
                missing.append(f"the url of {WEIGHTS} in {lf_path.name}")
            else:
                notes.append(f"{WEIGHTS} from {lf_path.name}")
        if not any((self.bundle / rel).is_file() for rel in INFERENCE_CONFIGS):
            missing.append("configs/inference.{json,yaml,yml}")
        if missing:
            raise CheckFailedError("missing: " + ", ".join(missing))
        if not (self.bundle / "docs" / "README.md").is_file():
            notes.append("docs/README.md is absent (the Zoo expects a model card)")
        return "required files present" + (f"; {'; '.join(notes)}" if notes else "")

    def check_version(self) -> str:
        """``version`` is a key of ``changelog`` (and not released yet when ``model_info`` is given)."""
        meta = _load_metadata(self.bundle)
        version, changelog = meta.get("version"), meta.get("changelog")
        if not isinstance(version, str) or not version:
            raise CheckFailedError("metadata has no 'version' string")
        if not isinstance(changelog, dict) or not changelog:
            raise CheckFailedError("metadata has no 'changelog' object")
        if version not in changelog:
            raise CheckFailedError(f"version {version!r} is not in changelog (keys: {', '.join(map(str, changelog))})")
        if self.model_info is not None:
            info = json.loads(self.model_info.read_text(encoding="utf-8"))
            key = f"{self.bundle.name}_v{version}"
            if key in info:
                raise CheckFailedError(f"{key} is already in {self.model_info}: bump the version")
        return f"version {version} is in changelog"

    def check_pins(self) -> str:
        """Every version in the metadata is an exact, pip-installable pin."""
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import InvalidVersion, Version

        meta = _load_metadata(self.bundle)
        pins: list[tuple[str, str, object]] = []
        problems = []
        for key, pkg in CORE_PINS.items():
            if key not in meta:
                problems.append(f"{key} is missing")
            else:
                pins.append((key, pkg, meta[key]))
        for key in ("required_packages_version", "optional_packages_version"):
            table = meta.get(key, {})
            if not isinstance(table, dict):
                problems.append(f"{key} is not an object")
                continue
            pins += [(f"{key}#{pkg}", pkg, ver) for pkg, ver in table.items()]
        for where, pkg, ver in pins:
            if not PACKAGE_NAME.match(str(pkg)):
                problems.append(f"{where}: {pkg!r} is not a package name")
                continue
            if not isinstance(ver, str):
                problems.append(f"{where}: {ver!r} is not a string")
                continue
            try:
                parsed = Version(ver)
                Requirement(f"{pkg}=={ver}")
            except (InvalidVersion, InvalidRequirement):
                problems.append(f"{where}: {ver!r} is not an exact version")
                continue
            if parsed.local is not None:
                problems.append(f"{where}: {ver!r} has a local tag '+{parsed.local}' that pip cannot install from PyPI")
        if problems:
            raise CheckFailedError("; ".join(problems))
        note = ""
        if "required_packages_version" in meta and "optional_packages_version" in meta:
            note = ("; warning: monai.bundle renames the deprecated optional_packages_version to "
                    "required_packages_version when it reads the metadata, so the required list is lost "
                    "(e.g. in exported models): keep one of the two keys")
        return f"{len(pins)} exact pins{note}"

    def check_metadata(self) -> str:
        """``monai.bundle verify_metadata`` against the given schema file, pre-placed so nothing downloads."""
        meta = _load_metadata(self.bundle)
        schema_copy = self.work / "schema" / self.schema.name
        schema_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.schema, schema_copy)
        md5 = _md5(schema_copy)
        note = ""
        url = str(meta.get("schema", ""))
        if url and url.rsplit("/", 1)[-1] != self.schema.name:
            note = f" (the metadata names {url.rsplit('/', 1)[-1]})"
        args = {"meta_file": str(self.bundle / "configs" / "metadata.json"), "filepath": str(schema_copy),
                "hash_val": md5, "hash_type": "md5"}
        try:
            self._monai("verify_metadata", args)
        except CheckFailedError as e:
            where = _schema_error_path(meta, schema_copy)
            raise CheckFailedError(f"{e}{f' (at {where})' if where else ''}") from e
        return f"valid against {self.schema.name} (md5 {md5}){note}"

    def check_net_in_out(self) -> str:
        """``monai.bundle verify_net_in_out`` with the metadata's input shape and output channels/dtype."""
        self._monai("verify_net_in_out", {**self._net_args(), "device": self.device})
        meta = _load_metadata(self.bundle)
        fmt = meta.get("network_data_format", {})
        shape = fmt.get("inputs", {}).get("image", {}).get("spatial_shape")
        channels = fmt.get("outputs", {}).get("pred", {}).get("num_channels")
        return f"{self.net_id} maps image {shape} to pred with {channels} channels"

    def check_torchscript(self) -> str:
        """``ckpt_export`` to TorchScript, reload without the bundle on the path, outputs equal to eager."""
        x_file, y_file, ckpt = self.reference()
        ts_file = self.work / "model.ts"
        self._monai("ckpt_export", {**self._net_args(), "filepath": str(ts_file), "ckpt_file": str(ckpt),
                                    "key_in_ckpt": self.key_in_ckpt})
        res = self._worker("compare_torchscript", {"model": str(ts_file), "input": str(x_file),
                                                   "expected": str(y_file), "rtol": self.rtol, "atol": self.atol},
                           with_bundle=False)
        if not res["ok"]:
            raise CheckFailedError(f"TorchScript output differs from eager: {res['detail']}")
        return f"exported and reloaded; {res['detail']}; metadata version {res.get('version')} embedded"

    def check_onnx(self) -> str:
        """``onnx_export``, run with onnxruntime, outputs equal to eager within tolerance."""
        x_file, y_file, ckpt = self.reference()
        probe = self._run([self.onnx_python, "-c", "import onnx, onnxruntime, onnxscript"], with_bundle=False)
        if probe.returncode != 0:
            raise CheckFailedError(f"{self.onnx_python} cannot import onnx/onnxscript/onnxruntime "
                              f"({_error_line(probe.stdout + probe.stderr)}); install them or pass --onnx_python")
        onnx_file = self.work / "model.onnx"
        self._monai("onnx_export", {**self._net_args(), "filepath": str(onnx_file), "ckpt_file": str(ckpt),
                                    "key_in_ckpt": self.key_in_ckpt}, python=self.onnx_python)
        res = self._worker("compare_onnx", {"model": str(onnx_file), "input": str(x_file), "expected": str(y_file),
                                            "rtol": self.onnx_rtol, "atol": self.onnx_atol},
                           python=self.onnx_python, with_bundle=False)
        if not res["ok"]:
            raise CheckFailedError(f"onnxruntime output differs from eager: {res['detail']}")
        return f"exported; {res['detail']}"

    def run(self, checks: Sequence[str], jobs: int = 1) -> list[Result]:
        """Run the selected checks; a failure does not stop the others.

        Args:
            checks: check names, in the order of the returned results.
            jobs: how many checks run at once. The network checks spend most of their time starting Python
                subprocesses, so on a machine with spare cores running them side by side saves most of it.
                Each check logs its line when it finishes.
        """

        def one(name: str) -> Result:
            fn: Callable[[], str] = getattr(self, f"check_{name}")
            try:
                r = Result(name, "PASS", fn())
            except CheckFailedError as e:
                r = Result(name, "FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - an unexpected error is a failed check, with its reason
                LOG.debug("check %s raised", name, exc_info=True)
                r = Result(name, "FAIL", f"{type(e).__name__}: {e}")
            (LOG.info if r.status == "PASS" else LOG.error)("%s %s: %s", r.status, r.name, r.reason)
            return r

        if jobs <= 1 or len(checks) <= 1:
            return [one(name) for name in checks]
        # the longest chain (reference, export, reload) starts first; the onnx check, which waits for the same
        # reference, starts last so that no worker idles on it
        order = sorted(checks, key=START_ORDER.index)  # names were validated against CHECKS
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify") as pool:
            futures = {name: pool.submit(one, name) for name in order}
            return [futures[name].result() for name in checks]


# ----------------------------------------------------------------------------------------------------------------
# workers: run by the verifier in subprocesses (``python verify_bundle.py --worker NAME JSON``)

WORKER_FLAG = "--worker"
WORKER_RESULT = "VERIFY_BUNDLE_RESULT "


def _parse_network(net: dict[str, Any]):
    """Instantiate a bundle's network (cwd and ``PYTHONPATH`` are the bundle) from the shared network arguments.

    Args:
        net: ``net_id``, ``meta_file``, ``config_file``; every other key is a config override (``bundle_root``
            included).

    Returns:
        The config parser and the network.
    """
    from monai.bundle import ConfigParser

    sys.path.insert(0, net["bundle_root"])
    parser = ConfigParser()
    parser.read_config(f=net["config_file"])
    parser.read_meta(f=net["meta_file"])
    for key, value in net.items():
        if key not in {"net_id", "meta_file", "config_file"}:
            parser[key] = value
    return parser, parser.get_parsed_content(net["net_id"])


def _worker_random_weights(args: dict[str, Any]) -> dict:
    """Save a freshly initialised network's weights as ``{key_in_ckpt: state_dict}``."""
    import torch

    torch.manual_seed(0)
    _, net = _parse_network(args["net"])
    state = net.state_dict()
    torch.save({args["key_in_ckpt"]: state} if args["key_in_ckpt"] else state, args["out"])
    return {"ok": True}


def _worker_reference(args: dict[str, Any]) -> dict:
    """Load the weights, feed a seeded random input of the metadata's shape, save input and eager output."""
    import numpy as np
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape
    from monai.utils import get_equivalent_dtype

    parser, net = _parse_network(args["net"])
    ckpt = torch.load(args["ckpt"], map_location="cpu", weights_only=True)
    state = ckpt[args["key_in_ckpt"]] if args["key_in_ckpt"] else ckpt
    net.load_state_dict(state, strict=True)
    net = net.to(args["device"]).eval()
    image = parser.get("_meta_#network_data_format#inputs#image")
    shape = (1, int(image["num_channels"]), *_get_fake_spatial_shape(image["spatial_shape"]))
    dtype = get_equivalent_dtype(image.get("dtype", "float32"), torch.Tensor)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        y = net(x.to(args["device"]))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"the network returns {type(y).__name__}, not one tensor")
    np.save(args["input"], x.numpy())
    np.save(args["output"], y.detach().float().cpu().numpy())
    return {"ok": True, "shape": list(y.shape)}


def _compare(actual, expected, rtol: float, atol: float) -> dict:
    """Compare two arrays; the detail names the largest difference."""
    import numpy as np

    if actual.shape != expected.shape:
        return {"ok": False, "detail": f"shape {list(actual.shape)} != eager {list(expected.shape)}"}
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    ok = bool(np.allclose(actual, expected, rtol=rtol, atol=atol))
    return {"ok": ok, "detail": f"max |diff| {diff:.3g} on shape {list(actual.shape)} (rtol {rtol}, atol {atol})"}


def _worker_compare_torchscript(args: dict[str, Any]) -> dict:
    """Reload a TorchScript file (no bundle code on the path) and compare it with the eager output."""
    import numpy as np
    import torch

    extra = {"metadata.json": ""}
    model = torch.jit.load(args["model"], map_location="cpu", _extra_files=extra).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(np.load(args["input"])))
    res = _compare(y.float().numpy(), np.load(args["expected"]), args["rtol"], args["atol"])
    try:
        res["version"] = json.loads(extra["metadata.json"]).get("version")
    except (json.JSONDecodeError, AttributeError):
        res["version"] = None
    return res


def _worker_compare_onnx(args: dict[str, Any]) -> dict:
    """Run an ONNX model with onnxruntime on CPU and compare it with the eager output."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(args["model"], providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        return {"ok": False, "detail": f"the ONNX model has {len(inputs)} inputs, expected 1"}
    (y, *rest) = session.run(None, {inputs[0].name: np.load(args["input"])})
    if rest:
        return {"ok": False, "detail": f"the ONNX model has {1 + len(rest)} outputs, expected 1"}
    res = _compare(np.asarray(y, dtype=np.float32), np.load(args["expected"]), args["rtol"], args["atol"])
    res["detail"] = f"onnxruntime {onnxruntime.__version__}: {res['detail']}"
    return res


WORKERS: dict[str, Callable[[dict[str, Any]], dict]] = {
    "random_weights": _worker_random_weights,
    "reference": _worker_reference,
    "compare_torchscript": _worker_compare_torchscript,
    "compare_onnx": _worker_compare_onnx,
}


# ----------------------------------------------------------------------------------------------------------------
# command line


def _default_jobs() -> int:
    """The CPU cores this process may use (its affinity where the OS reports it), at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def _parse_checks(checks: str | Sequence[str] | None) -> list[str]:
    """Normalise ``--checks`` (comma-separated string, list or tuple) and reject unknown names."""
    if checks is None or checks == "" or checks == "all":
        return list(CHECKS)
    items = [c for part in ([checks] if isinstance(checks, str) else checks) for c in str(part).split(",")]
    items = [c.strip() for c in items if c.strip()]
    unknown = [c for c in items if c not in CHECKS]
    if unknown:
        raise UsageError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    return [c for c in CHECKS if c in items]


def _parse_override(override: dict | str | None) -> dict[str, Any]:
    """``--override`` as a dict (fire parses ``{...}``) or a JSON object string."""
    if override is None or override == "":
        return {}
    if isinstance(override, str):
        try:
            override = json.loads(override)
        except json.JSONDecodeError as e:
            raise UsageError(f"--override must be a JSON object: {e}") from e
    if not isinstance(override, dict):
        raise UsageError(f"--override must be an object of id -> value, got {type(override).__name__}")
    return {str(k): v for k, v in override.items()}


def verify(
    bundle: str,
    checks: str | Sequence[str] | None = None,
    schema: str | None = None,
    config: str | Sequence[str] | None = None,
    override: dict | str | None = None,
    net_id: str = "network_def",
    key_in_ckpt: str = "model",
    ckpt: str | None = None,
    random_weights: bool = False,
    model_info: str | None = None,
    onnx_python: str | None = None,
    device: str = "cpu",
    rtol: float = 1e-4,
    atol: float = 1e-4,
    onnx_rtol: float = 1e-3,
    onnx_atol: float = 1e-4,
    timeout: int = 600,
    keep_dir: str | None = None,
    jobs: int | None = None,
) -> list[Result]:
    """Verify a bundle folder as the Model Zoo's CI does; log one PASS/FAIL/SKIP line per check.

    Args:
        bundle: the bundle folder (anywhere, e.g. an unzipped package).
        checks: subset of ``files,version,pins,metadata,net_in_out,torchscript,onnx`` (default: all).
        schema: metadata schema file (default: the vendored ``meta_schema_20240725.json``).
        config: inference config(s) relative to the bundle (default ``configs/inference.{json,yaml,yml}``).
        override: config overrides for the network checks, e.g. ``"{'num_classes': 3}"``.
        net_id: the network's config id.
        key_in_ckpt: key of the weights in the checkpoint (``model`` for ``{"model": state_dict}``).
        ckpt: checkpoint file (default ``<bundle>/models/model.pt``).
        random_weights: export checks use freshly initialised weights instead of the checkpoint.
        model_info: a Zoo ``model_info.json``; fails when ``<name>_v<version>`` is already in it.
        onnx_python: interpreter for the ONNX check (default: this one).
        device: device of the network checks.
        rtol: relative tolerance, TorchScript vs eager.
        atol: absolute tolerance, TorchScript vs eager.
        onnx_rtol: relative tolerance, onnxruntime vs eager.
        onnx_atol: absolute tolerance, onnxruntime vs eager.
        timeout: seconds allowed to each subprocess.
        keep_dir: write the exports and arrays here (kept) instead of a temporary folder.
        jobs: checks run at once (default: the CPU cores this process may use, at most 4); 1 runs them one by
            one. Results and the exit status do not depend on it.

    Returns:
        One :class:`Result` per selected check.

    Raises:
        UsageError: the bundle folder, schema or an option is invalid.
    """
    root = Path(bundle).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    selected = _parse_checks(checks)
    schema_path = Path(schema).expanduser().resolve() if schema else DEFAULT_SCHEMA
    if "metadata" in selected:
        if not schema_path.is_file():
            raise UsageError(f"schema file {schema_path} not found")
        if schema is None and _md5(schema_path) != DEFAULT_SCHEMA_MD5:
            raise UsageError(f"{schema_path} has md5 {_md5(schema_path)}, not the official {DEFAULT_SCHEMA_MD5}")
    model_info_path = Path(model_info).expanduser().resolve() if model_info else None
    if model_info_path is not None and not model_info_path.is_file():
        raise UsageError(f"model_info file {model_info_path} not found")
    if isinstance(config, str):
        config = [c for c in config.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="verify_bundle_") as tmp:
        work = Path(keep_dir).expanduser().resolve() if keep_dir else Path(tmp)
        if work.exists() and not work.is_dir():
            raise UsageError(f"--keep_dir {work} is a file, not a folder")
        if work == root or root in work.parents:
            raise UsageError("--keep_dir must be outside the bundle (the bundle is never modified)")
        verifier = BundleVerifier(
            bundle=root,
            work=work,
            schema=schema_path,
            config=config,
            override=_parse_override(override),
            net_id=net_id,
            key_in_ckpt=key_in_ckpt,
            ckpt=Path(ckpt).expanduser().resolve() if ckpt else None,
            random_weights=random_weights,
            model_info=model_info_path,
            onnx_python=onnx_python or sys.executable,
            device=device,
            rtol=rtol,
            atol=atol,
            onnx_rtol=onnx_rtol,
            onnx_atol=onnx_atol,
            timeout=timeout,
        )
        jobs = _default_jobs() if jobs is None else jobs
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise UsageError(f"--jobs must be a whole number of at least 1, got {jobs!r}")
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create --keep_dir {work}: {e.strerror or e}") from e
        LOG.info("verifying %s: %s (%d at a time)", root, ", ".join(selected), min(jobs, len(selected)))
        results = verifier.run(selected, jobs=jobs)
    failed = [r.name for r in results if r.status == "FAIL"]
    LOG.info("%d passed, %d failed%s", len(results) - len(failed), len(failed),
             f" ({', '.join(failed)})" if failed else "")
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python scripts/verify_bundle.py BUNDLE [options]``.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        0 when every check passed, 1 when one failed, 2 on a usage error.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == WORKER_FLAG:
        logging.basicConfig(level=logging.WARNING)
        result = WORKERS[argv[1]](json.loads(argv[2]))
        sys.stdout.write(WORKER_RESULT + json.dumps(result) + "\n")
        return 0


    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        results = fire_cli(verify, UsageError, argv, serialize=lambda _: None)
    except UsageError as e:
        LOG.error("%s", e)
        return 2
    if not isinstance(results, list):  # --help and similar
        return 0
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
