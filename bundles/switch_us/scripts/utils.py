# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Run-time helpers: device, mixed precision, memory format and run folders."""

from __future__ import annotations

import ast
import atexit
import contextlib
import ctypes
import ctypes.util
import difflib
import functools
import logging
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FINISHED_MARKER",
    "RUNNING_MARKER",
    "RunFolderBusyError",
    "TwoStageCosine",
    "amp_context",
    "check_cli_overrides",
    "claim_run_folder",
    "cpu_supports_bf16",
    "default_device",
    "error_summary",
    "install_error_summary",
    "keep_freed_memory",
    "resolve_amp_dtype",
    "resolve_run_dir",
    "to_memory_format",
]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters

FINISHED_MARKER = "FINISHED"
"""File written into a run folder when its workflow completed; such a folder is never written again."""


def default_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_amp_dtype(device: torch.device | str, amp: bool = True, dtype: str | torch.dtype | None = None):
    """The autocast dtype to use on ``device``, or None for full fp32.

    ``dtype=None`` picks bfloat16 on CPUs with native bf16 support (fp32 elsewhere on CPU), and on CUDA
    bfloat16 where supported, else float16.
    """
    if not amp:
        return None
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    _warn_amp_unavailable(device.type)
    return None


@functools.cache
def _warn_amp_unavailable(device_type: str) -> None:
    """Say once per device type that ``amp`` was asked for but the run is fp32 (reached only off CUDA)."""
    logger.warning(
        f"amp is on but {device_type} has no native bfloat16 here (a CPU needs AVX512-BF16 or AMX): running in "
        "fp32; `--amp False` makes this explicit."
    )


@contextlib.contextmanager
def amp_context(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``device`` with ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Return ``x`` in channels-last layout (2D or 3D) when asked, else unchanged."""
    if not channels_last:
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def keep_freed_memory(enabled: bool = True) -> bool:
    """Keep the memory torch frees on the CPU inside this process for reuse, instead of returning it to the system.

    glibc serves every large allocation (the activations of a training step, a sliding-window batch) with fresh
    ``mmap`` pages and unmaps them on free, so each iteration faults in and zeroes its whole working set again. On
    the 2-core development CPU that was a fifth of the CPU time of a Switch iteration: ``mallopt(M_MMAP_MAX, 0)``
    serves large blocks from the heap and ``mallopt(M_TRIM_THRESHOLD, 2 GiB)`` keeps freed heap memory, so the pages
    are reused (``python scripts/benchmark.py one switch published amp --keep_freed_memory False|True``: 474 000 ->
    3 300 page faults and 2.99 -> 2.34 s per iteration). The resident memory then stays near the run's peak
    instead of falling between iterations. Does nothing on systems without glibc (macOS, Windows, musl).

    Args:
        enabled: False leaves the allocator as it is (the config key ``keep_freed_memory``).

    Returns:
        whether the setting was applied.
    """
    if not enabled or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        applied = False
    if not applied:
        logger.info("keep_freed_memory: glibc's mallopt is not available; the allocator is left as it is.")
    return applied


RUNNING_MARKER = "RUNNING"
"""File a run holds in its folder while it writes there: ``<pid> <host>``; removed when the process exits."""


class RunFolderBusyError(RuntimeError):
    """Another live process is writing to the run folder this run would use."""

    brief_report = True  # ``monai.bundle run`` shows its message without a traceback (scripts.utils.error_summary)


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


def resolve_run_dir(root: str, name: str, overwrite: bool = False) -> str:
    """The folder a run writes to: ``root/name``, never a finished run's folder.

    - a new or unfinished folder is used as is (an unfinished run resumes from its checkpoints);
    - a folder holding a finished run (``FINISHED`` marker) is never written again: the run goes to the first
      free ``root/name_2``, ``root/name_3``... unless ``overwrite`` is True, in which case the marker is removed
      and the old results are overwritten as the files are rewritten.

    The decision is logged, so the user always knows where the results are. The folder is then held for this
    run (:func:`claim_run_folder`): a second run of the same name started while this one writes there stops.
    """
    base = Path(root) / name
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


class TwoStageCosine:
    """Learning-rate factor of a two-stage schedule: per-iteration cosine annealing to 0 within each stage.

    For ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration: the factor is
    ``0.5 (1 + cos(pi k / P))`` during the first ``pretrain_iterations`` steps and restarts at 1 for the
    self-training stage, ``0.5 (1 + cos(pi j / S))`` with ``j = k - P`` and ``S = total - P`` (the
    published Switch schedule: each stage has its own CosineAnnealingLR, eta_min 0).

    Args:
        pretrain_iterations: length of the first stage (0 for a single stage).
        total_iterations: length of the whole run.
        selftrain_scale: factor on the self-training stage's peak learning rate (1.0, the published restart at
            the base learning rate); a single-stage schedule (no pre-training) ignores it.
    """

    def __init__(self, pretrain_iterations: int, total_iterations: int, selftrain_scale: float = 1.0) -> None:
        if total_iterations <= 0 or not 0 <= pretrain_iterations <= total_iterations:
            raise ValueError(f"need 0 <= pretrain_iterations ({pretrain_iterations}) <= total_iterations ({total_iterations}).")
        if not selftrain_scale > 0:
            raise ValueError(f"selftrain_scale must be positive, got {selftrain_scale}.")
        self.pretrain = int(pretrain_iterations)
        self.total = int(total_iterations)
        self.selftrain_scale = float(selftrain_scale)

    def __call__(self, step: int) -> float:
        if step < self.pretrain:
            k, n, scale = step, self.pretrain, 1.0
        else:
            k, n = step - self.pretrain, max(self.total - self.pretrain, 1)
            scale = self.selftrain_scale if self.pretrain > 0 else 1.0  # a single stage is not a restart
        return scale * 0.5 * (1.0 + math.cos(math.pi * min(k, n) / n))


# ---- short reports of config and input errors -------------------------------------------------------------------

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


def install_error_summary() -> None:
    """Make this process report config and input errors with :func:`error_summary` instead of tracebacks.

    Installed by :func:`check_cli_overrides` in ``python -m monai.bundle run`` processes only, unless
    ``SSL_BUNDLES_TRACEBACK`` is set; any other uncaught error goes to the hook that was there before.
    """
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or getattr(sys.excepthook, "error_summary", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        summary = error_summary(exc) if isinstance(exc, Exception) else None
        if summary is None:
            previous(exc_type, exc, tb)
        else:
            # not logging: the bundle's log format would hide the "Error: message" line that tools look for
            sys.stderr.write(summary + "\n")

    hook.error_summary = True  # type: ignore[attr-defined]
    sys.excepthook = hook


# ---- command-line override check -------------------------------------------------------------------------------

_BUNDLE_CLI_ENTRIES = ("monai/bundle/__main__.py", "monai/bundle/__main__.pyc", "monai/bundle")


_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off")


def _is_bundle_cli(arg0: str) -> bool:
    """Whether ``arg0`` (a process's ``argv[0]``) is the ``monai.bundle`` entry point (``python -m monai.bundle``)."""
    path = str(arg0).replace("\\", "/").rstrip("/")
    return any(path == entry or path.endswith("/" + entry) for entry in _BUNDLE_CLI_ENTRIES)


def _is_fire_flag(arg: str) -> bool:
    """Whether python-fire reads ``arg`` as a flag (``--name``, ``-n``), as ``fire.core._IsFlag`` does."""
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None


def _fire_keyword_args(args: Sequence[str], run_params: set[str]) -> dict[str, str]:
    """The ``--key value`` / ``--key=value`` / ``--flag`` pairs that python-fire passes to ``monai.bundle run``.

    Mirrors ``fire.core._ParseKeywordArgs`` for a function taking ``**kwargs``: dashes in a key become
    underscores, a flag followed by another flag (or by nothing) is boolean, and a boolean ``--noname`` that is not
    a parameter of ``run`` sets ``name`` to False. Positional arguments (``run_id``...) are skipped.
    """
    pairs: dict[str, str] = {}
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if not _is_fire_flag(arg):
            continue
        stripped = arg.lstrip("-")
        if "=" in arg:
            key, value = stripped.split("=", 1)
            key = key.replace("-", "_")
        else:
            key = stripped.replace("-", "_")
            if index + 1 == len(args) or _is_fire_flag(args[index + 1]):
                value = "True"
                if key not in run_params and key.startswith("no"):
                    key, value = key[2:], "False"
            else:
                value, skip = args[index + 1], True
        pairs[key] = value
    return pairs


def _is_expression(value: Any) -> bool:
    """Whether a config or override value is a ``$`` expression, an ``@`` reference or a ``%`` macro."""
    return isinstance(value, str) and value.strip()[:1] in ("$", "@", "%")


def _override_type_problem(default: Any, value: Any, key: str) -> str | None:
    """``--key value: why`` when ``value`` cannot override a config's literal ``default``, else None.

    python-fire passes a value that is not a Python literal on as a string (``--amp false``, ``--seed abc``), which
    the config would use as it is. Expressions, references, None and defaults other than a literal bool, int, float
    or str are not checked; an int is a valid float, a bool is neither; a string default accepts a bool
    (``channels_last: auto``) but not a number, which python-fire made of digits (``--run_name 2``).
    """
    if value is None or _is_expression(value) or _is_expression(default):
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return f"--{key} {value}: this key takes True or False (capitalised, as Python writes them)"
        return f"--{key} {value!r}: this key takes True or False (a string is always true)"
    if isinstance(default, int):
        return None if number and isinstance(value, int) else f"--{key} {value!r}: this key takes a whole number"
    if isinstance(default, float):
        return None if number else f"--{key} {value!r}: this key takes a number"
    if isinstance(default, str) and number:
        return f"--{key} {value!r}: this key takes a string: quote the number, --{key} \"'{value}'\""
    return None


def _fire_value(value: Any) -> Any:
    """A command-line value as python-fire parses it (a Python literal where it is one, else the string)."""
    if not isinstance(value, str):
        return value
    try:
        from fire.parser import DefaultParseValue
    except ImportError:  # fire is what runs `python -m monai.bundle`; this is only a fallback
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return DefaultParseValue(value)


def _config_ids(node: Any, prefix: str, sep: str) -> list[str]:
    """Every id under ``node`` (dict keys and list indices), joined with ``sep``."""
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    ids = []
    for key, value in items:
        id_ = f"{prefix}{sep}{key}" if prefix else str(key)
        ids.append(id_)
        ids.extend(_config_ids(value, id_, sep))
    return ids


def _override_is_known(parser: Any, key: str, sep: str) -> bool:
    """Whether the normalised id ``key`` exists in ``parser``, or names a new entry of a dict/list it has."""
    if key.split(sep)[0] == "_meta_" or key in parser:
        return True
    parent, _, last = key.rpartition(sep)
    if not parent or parent not in parser:
        return False
    node = parser[parent]
    if isinstance(node, dict):
        return True
    if isinstance(node, list):
        try:
            int(last)
        except ValueError:
            return False
        return True
    return False


def check_cli_overrides(argv: Sequence[str] | None = None) -> None:
    """Refuse a ``python -m monai.bundle run`` override that names no key of the config files, or of the wrong type.

    ``monai.bundle run --lerning_rate 0.1`` would silently add a new key ``lerning_rate`` and train with the
    default learning rate; ``--amp maybe`` would reach the config as the string "maybe", which is true. The
    workflow configs call this function as the first item of ``initialize`` (of ``run`` in an overlay that has no
    ``initialize``), so such an override stops the run before any data are read or any output folder is created.

    It does nothing unless this process is a ``monai.bundle run`` command line (``argv[0]`` is
    ``monai/bundle/__main__.py``, as under ``python -m monai.bundle`` and ``torchrun -m monai.bundle``, and the
    first argument is ``run``); MONAI Label and tests that call ``monai.bundle.run`` in-process are left alone.
    In such a process (``argv`` None) it also installs :func:`install_error_summary`, so later errors of the
    config or the data are reported in a few lines instead of MONAI's chained tracebacks.
    The arguments ``run`` takes itself (``config_file``, ``meta_file``, ``tracking``..., read from the signatures
    of ``monai.bundle.scripts.run``, ``create_workflow`` and ``ConfigWorkflow``) are not overrides. Every other
    ``--key value`` / ``--key=value`` (and every other key of an ``--args_file``) must name an id of the merged
    ``--config_file`` files (``#`` or ``::`` separated, list indices included, e.g.
    ``train#handlers#7#_disabled_``), a new entry of a dict they define (``--network_def#n_filters 8``), a
    ``_meta_`` id, or a key that ``--tracking`` adds (``tracking_uri``, ``experiment_name``...). A value for a key
    whose config value is a literal bool, int, float or string must have that type (an int for a float); values
    that are ``$`` expressions or ``@`` references, None, and keys whose config value is an expression are not
    checked.

    Args:
        argv: the command line to check; ``sys.argv`` when None. Relative config paths are read from the
            current working directory, as ``monai.bundle run`` reads them.

    Raises:
        ValueError: an override names an unknown key (the message names each such key with the closest known
            ids and the config files, and tells how to list their keys), or has a value of another type.

    Example::

        initialize:
          - {_target_: scripts.utils.check_cli_overrides}
          - $monai.utils.set_determinism(seed=@seed)
    """
    own_process = argv is None
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or not _is_bundle_cli(argv[0]):
        return
    args = argv[1:]
    if "--" in args:  # python-fire: the arguments after the last lone "--" are fire's own flags
        args = args[: len(args) - 1 - args[::-1].index("--")]
    if not args or args[0] != "run":
        return
    if own_process:
        install_error_summary()

    import inspect

    from monai.bundle import ConfigParser, ConfigWorkflow
    from monai.bundle import scripts as bundle_scripts
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS, ID_SEP_KEY

    def _param_names(fn: Any) -> set[str]:
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return {p.name for p in inspect.signature(fn).parameters.values() if p.kind not in kinds} - {"self"}

    run_params = _param_names(bundle_scripts.run)
    own = run_params | _param_names(bundle_scripts.create_workflow) | _param_names(ConfigWorkflow.__init__)

    cli = _fire_keyword_args(args[1:], run_params)
    overrides = {key: "the command line" for key in cli if key not in own}
    file_args: dict = {}
    if "args_file" in cli:
        args_file = _fire_value(cli["args_file"])
        if not isinstance(args_file, str) or not os.path.isfile(args_file):
            return  # monai.bundle run reports this itself
        file_args = ConfigParser.load_config_file(args_file) or {}
        for key in file_args:
            if key not in own and key not in overrides:
                overrides[key] = args_file
    if not overrides:
        return

    config_file = _fire_value(cli["config_file"]) if "config_file" in cli else file_args.get("config_file")
    if config_file is None:
        return
    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    files = [str(f) for f in files]
    if not all(os.path.isfile(f) for f in files):
        return  # monai.bundle run reports missing config files itself
    parser = ConfigParser()
    parser.read_config(f=files)

    tracking = _fire_value(cli["tracking"]) if "tracking" in cli else file_args.get("tracking")
    settings: Any = None
    if isinstance(tracking, dict):
        settings = tracking
    elif isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    elif isinstance(tracking, str) and os.path.isfile(tracking):
        settings = ConfigParser.load_config_files(tracking)
    if isinstance(settings, dict) and isinstance(settings.get("configs"), dict):
        for key, value in settings["configs"].items():  # the top-level keys that --tracking adds when absent
            if key not in parser:
                parser[key] = value

    unknown, mistyped = [], []
    for key, source in overrides.items():
        id_ = str(key).replace("#", ID_SEP_KEY)
        if _override_is_known(parser, id_, ID_SEP_KEY):
            value = _fire_value(cli[key]) if source == "the command line" else file_args.get(key)
            if id_ in parser and (problem := _override_type_problem(parser[id_], value, str(key))):
                mistyped.append(problem)
            continue
        sep = ID_SEP_KEY if ID_SEP_KEY in str(key) else "#"
        close = difflib.get_close_matches(str(key), _config_ids(parser.get(), "", sep), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        unknown.append(f"{key!r} given {'on' if source == 'the command line' else 'in'} {source}{hint}")
    if mistyped:
        raise ValueError(
            f"{'; '.join(mistyped)}. python-fire passes a value that is not a Python literal (True, 3, 0.5, [1, 2], "
            "'text') on as a string, which the config would use as it is; '$' expressions and '@' references are not "
            "checked"
        )
    if not unknown:
        return
    names = " + ".join(files)
    listing = (
        'python -c "from monai.bundle import ConfigParser; p = ConfigParser(); '
        f'p.read_config({files!r}); print(*p.get(), sep=chr(10))"'
    )
    raise ValueError(
        f"unknown config key{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}; an override must name a key of "
        f"the config {names}: an existing id (nested ids as a#b#c, list items by index) or a new entry of an existing "
        f"dict. The top-level keys of {names} are listed with: {listing}"
    )
