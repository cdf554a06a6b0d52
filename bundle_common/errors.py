# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Short reports of config and input errors instead of chained tracebacks, and the bundles' error classes."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

__all__ = [
    "ConfigValueError",
    "DataError",
    "MissingWeightsError",
    "SettingsMismatchError",
    "TRACEBACK_ENV",
    "WeightsError",
    "error_summary",
    "install_error_summary",
    "is_bundle_cli",
    "note_run_folder",
]


class DataError(ValueError):
    """A datalist, image or label that the bundle cannot use; the message names the file and the problem."""

    brief_report = True  # ``monai.bundle run`` shows its message without a traceback (error_summary)


class ConfigValueError(ValueError):
    """A config value the bundle cannot use (a size the network cannot take, an output folder it cannot write)."""

    brief_report = True


class MissingWeightsError(FileNotFoundError):
    """No weights file at ``ckpt_path``."""

    brief_report = True


class WeightsError(ValueError):
    """A ``ckpt_path`` that is not a readable weights file or does not fit the config's network."""

    brief_report = True


class SettingsMismatchError(ValueError):
    """A setting of this run (input size, classes, ...) contradicts the one the model was trained with."""

    brief_report = True


_RUN_FOLDER: list[str] = []


def note_run_folder(folder: str | os.PathLike) -> None:
    """Remember the folder this process's run writes to, for the one-line report of Ctrl-C."""
    _RUN_FOLDER[:] = [str(folder)]


def interrupted_summary() -> str:
    """The line printed when the user stops a run with Ctrl-C."""
    if not _RUN_FOLDER:
        return "stopped (Ctrl-C)."
    return (f"stopped (Ctrl-C): the run's checkpoint is in {os.path.join(_RUN_FOLDER[0], 'models')}; the same "
            "command resumes it (a finished evaluation or inference run is simply rerun).")


_BUNDLE_CLI_ENTRIES = ("monai/bundle/__main__.py", "monai/bundle/__main__.pyc", "monai/bundle")


def is_bundle_cli(arg0: str) -> bool:
    """Whether ``arg0`` (a process's ``argv[0]``) is the ``monai.bundle`` entry point (``python -m monai.bundle``)."""
    path = str(arg0).replace("\\", "/").rstrip("/")
    return any(path == entry or path.endswith("/" + entry) for entry in _BUNDLE_CLI_ENTRIES)


TRACEBACK_ENV = "SSL_BUNDLES_TRACEBACK"
"""Set to 1 to get Python's full traceback instead of :func:`error_summary`'s short report."""


_UNDEFINED_REFERENCE = "is not defined in the config content"
OVERLAY_HINT = (
    "if an overlay (configs/evaluate.yaml, configs/demo.yaml, a baseline) ran on its own, put the workflow it "
    "extends first: --config_file \"['configs/train.yaml','configs/evaluate.yaml']\""
)
"""The hint added to an undefined-reference error, most often an overlay run on its own."""


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (or while handling), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _raised_in_monai_bundle(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by MONAI's config machinery (``monai/bundle/*``), such as an undefined reference."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "/monai/bundle/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")


def error_summary(exc: BaseException) -> str | None:
    """A few lines on an error of the user's config or data, or None for any other error.

    ``monai.bundle run`` wraps an error of a config component in "Failed to instantiate component ..." (and of a
    ``$`` expression in "Failed to evaluate ..."), so a bad value or file ends in two or more chained tracebacks
    through MONAI's resolver. This reports, instead, the error that says what is wrong (the bundle's own input
    errors, whose class sets ``brief_report``, such as ``DataError`` and ``MissingWeightsError``, when one is in the
    chain, else the innermost cause) and the component being created. Errors of neither kind (a crash during
    training, out of memory) return None: they keep their traceback.
    """
    chain = _exception_chain(exc)
    creating = [str(e).splitlines()[0].strip() for e in chain
                if isinstance(e, RuntimeError) and str(e).startswith("Failed to instantiate component")]
    own = next((e for e in chain if getattr(type(e), "brief_report", False)), None)
    # MONAI's own config errors (an undefined reference, a missing key), not its "Failed to ..." wrappers
    config = [e for e in chain if not isinstance(e, RuntimeError) and _raised_in_monai_bundle(e)]
    if own is None and not creating and not config:
        return None
    shown = own or (chain[-1] if creating else config[-1])
    lines = [f"{type(shown).__name__}: {shown}"]
    if not creating and _UNDEFINED_REFERENCE in str(shown):
        lines.append(f"  {OVERLAY_HINT}")
    if creating:
        match = re.match(r"Failed to instantiate component '([^']+)'(?: with keywords: *(.*))?", creating[-1])
        target, keywords = (match.group(1), (match.group(2) or "").strip()) if match else (creating[-1], "")
        lines.append(f"  while creating {target}({keywords.replace(',', ', ')}) from the config")
    lines.append(f"  ({TRACEBACK_ENV}=1 shows the full traceback)")
    return "\n".join(lines)


def install_error_summary(argv: list[str] | None = None) -> bool:
    """Make a ``python -m monai.bundle run`` process report config and input errors in a few lines.

    The workflow configs call it explicitly, as the first item of ``initialize``. It installs a ``sys.excepthook``
    that prints :func:`error_summary` for the errors it knows, one line for Ctrl-C (where the checkpoint is, and that
    the same command resumes), and hands any other uncaught error to the hook that was there before. Nothing is installed outside a ``monai.bundle`` command line (MONAI Label and tests that call
    ``monai.bundle.run`` in their own process keep their hooks), when ``SSL_BUNDLES_TRACEBACK`` is set, or twice.

    Args:
        argv: the process's command line; ``sys.argv`` when None.

    Returns:
        whether the hook is installed in this process after the call.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not is_bundle_cli(argv[0]) or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        return False
    if getattr(sys.excepthook, "error_summary", False):
        return True
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt):
            sys.stderr.write(interrupted_summary() + "\n")
            return
        summary = error_summary(exc) if isinstance(exc, Exception) else None
        if summary is None:
            previous(exc_type, exc, tb)
        else:
            # not logging: the bundle's log format would hide the "Error: message" line that tools look for
            sys.stderr.write(summary + "\n")

    hook.error_summary = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
