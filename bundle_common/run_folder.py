# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Run folders: where a run writes, the marker of a finished run, and the lock that keeps one run per folder."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from .errors import ConfigValueError, note_run_folder
from .runtime import is_main_process

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = [
    "FINISHED_MARKER",
    "RUNNING_MARKER",
    "RunFinishedMarker",
    "RunFolderBusyError",
    "RunNameError",
    "check_run_name",
    "check_writable",
    "claim_run_folder",
    "resolve_run_dir",
]

logger = logging.getLogger(__name__)

FINISHED_MARKER = "FINISHED"
"""File written into a run folder when its workflow completed; such a folder is never written again."""

RUNNING_MARKER = "RUNNING"
"""File a run holds in its folder while it writes there: ``<pid> <host>``; removed when the process exits."""


class RunFolderBusyError(RuntimeError):
    """Another live process is writing to the run folder this run would use."""

    brief_report = True  # ``monai.bundle run`` shows its message without a traceback (.errors.error_summary)


class RunNameError(ValueError):
    """A run name that is not a plain folder name (it would write outside the runs folder)."""

    brief_report = True


def check_run_name(name: str) -> str:
    """Return ``name`` if it is one plain folder name, so that ``root/name`` stays inside ``root``.

    Raises:
        RunNameError: an empty name, ``.`` or ``..``, or a name with a path separator.
    """
    text = str(name)
    if not text.strip() or text in (".", "..") or "/" in text or "\\" in text or (os.sep in text) or "\0" in text:
        raise RunNameError(
            f"run_name {text!r} is not a plain folder name: a run writes to runs/<run_name>, so the name may not be "
            "empty, '.', '..' or hold a path separator. Pass a name like --run_name my_experiment."
        )
    return text


def check_writable(folders: list[str | os.PathLike]) -> None:
    """Refuse before any work a run whose output folders cannot be written (a read-only ``models/``, say).

    A folder that does not exist yet must be creatable: its nearest existing parent must be writable.

    Raises:
        ConfigValueError: naming the folder and what to do.
    """
    for folder in folders:
        path = Path(folder).absolute()
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            problem = "is a file, not a folder" if not existing.is_dir() else "is not writable"
            what = problem if existing == path else f"cannot be created ({existing} {problem})"
            raise ConfigValueError(
                f"the output folder {path} {what}: the run would fail after its work. Make it writable, or point the "
                "run elsewhere (--bundle_root for runs/ and models/, --publish_model False to leave models/ alone)."
            )


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _release_run_folder(marker: Path, owner: str) -> None:
    """Remove ``marker`` if this process still holds it (``atexit``)."""
    with contextlib.suppress(OSError):
        if marker.read_text() == owner:
            marker.unlink()


def claim_run_folder(folder: Path, finished: bool = False) -> None:
    """Hold ``folder`` for this process with a ``RUNNING`` marker, so that no second run writes there at once.

    Two runs with the same ``run_name`` started side by side would otherwise resume the same checkpoints and
    overwrite each other's files. A marker left by a process that has ended (a crash, a killed run: the run then
    resumes), by this process (MONAI Label trains in its own process, one run after the other) or in a folder whose
    run finished is taken over; one held by a live process stops this run. Under ``torchrun`` only rank 0 holds
    it. The marker is removed when the process exits.

    Args:
        folder: the run folder (it exists).
        finished: the folder held a finished run (reused with ``overwrite``): any marker in it is stale.

    Raises:
        RunFolderBusyError: a live process on this machine, or a process on another machine sharing the folder,
            holds it; the message says how to go on.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    folder = Path(folder).resolve()
    marker = folder / RUNNING_MARKER
    host = platform.node()
    owner = f"{os.getpid()} {host}"
    try:
        pid_text, _, other_host = marker.read_text().strip().partition(" ")
        pid = int(pid_text)
    except FileNotFoundError:
        pid = None
    except (OSError, ValueError):
        pid, other_host = -1, host  # unreadable: treat as stale
    if pid is not None and not finished and pid != os.getpid():
        if other_host != host or (pid > 0 and _process_alive(pid)):
            where = f"process {pid}" + (f" on {other_host}" if other_host != host else "")
            raise RunFolderBusyError(
                f"{folder} is in use by another run ({where} holds {marker}). Wait for it to end, give this run "
                f"another --run_name, or, if no such run is going on, delete {marker} and start again (an "
                "unfinished run resumes from its checkpoints)."
            )
        logger.info(f"{folder}: taking over from a run that ended without finishing (process {pid}).")
    marker.write_text(owner)
    atexit.register(_release_run_folder, marker, owner)
    note_run_folder(folder)


def resolve_run_dir(root: str, name: str, overwrite: bool = False) -> str:
    """The folder a run writes to: ``root/name``, never a finished run's folder.

    - a new or unfinished folder is used as is (an unfinished run resumes from its checkpoints);
    - a folder holding a finished run (``FINISHED`` marker) is never written again: the run goes to the first
      free ``root/name_2``, ``root/name_3``... unless ``overwrite`` is True, in which case the marker is removed
      and the old results are overwritten as the files are rewritten.

    The decision is logged, so the user always knows where the results are. The folder is then held for this
    run (:func:`claim_run_folder`): a second run of the same name started while this one writes there stops.
    """
    base = Path(root) / check_run_name(name)
    candidate, n, reused = base, 1, False
    while (candidate / FINISHED_MARKER).exists():
        if overwrite:
            reused = True
            logger.warning(f"overwriting the finished run in {candidate} (overwrite=True).")
            (candidate / FINISHED_MARKER).unlink()
            for stale in candidate.glob("models/checkpoint*.pt"):  # start afresh, do not resume the old run
                stale.unlink()
            break
        n += 1
        candidate = Path(root) / f"{name}_{n}"
    if candidate != base and not overwrite:
        logger.warning(f"{base} holds a finished run; this run writes to {candidate} (pass --overwrite True to reuse it).")
    candidate.mkdir(parents=True, exist_ok=True)
    claim_run_folder(candidate, finished=reused)
    return str(candidate)


class RunFinishedMarker:
    """Write the run folder's ``FINISHED`` marker when the engine it is attached to completes.

    Attached last to the last engine of a workflow (the test evaluator of training and evaluation, the inference
    evaluator), so the marker says that every output of the run is complete; a folder with the marker is never
    written again (:func:`resolve_run_dir`). Only the main process writes it.

    Args:
        output_dir: the run folder.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / FINISHED_MARKER).touch()
