# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The check of ``python -m monai.bundle run`` command-line overrides against the config's keys and types."""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ConfigValueError, is_bundle_cli

__all__ = ["check_cli_overrides", "check_size", "fire_keyword_args"]

_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off")


def _is_fire_flag(arg: str) -> bool:
    """Whether python-fire reads ``arg`` as a flag (``--name``, ``-n``), as ``fire.core._IsFlag`` does."""
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None


def fire_keyword_args(args: Sequence[str], run_params: set[str]) -> dict[str, str]:
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
    if default is None and isinstance(value, str) and value.strip().lower() in (*_BOOL_WORDS, "none", "null"):
        # a key whose default is null (publish_model) takes None or a bool: 'false' would be a true string
        return f"--{key} {value}: write True, False or None (capitalised, as Python writes them)"
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
          - {_target_: scripts.common.overrides.check_cli_overrides}
          - $monai.utils.set_determinism(seed=@seed)
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or not is_bundle_cli(argv[0]):
        return
    args = argv[1:]
    if "--" in args:  # python-fire: the arguments after the last lone "--" are fire's own flags
        args = args[: len(args) - 1 - args[::-1].index("--")]
    if not args or args[0] != "run":
        return

    import inspect

    from monai.bundle import ConfigParser, ConfigWorkflow
    from monai.bundle import scripts as bundle_scripts
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS, ID_SEP_KEY

    def _param_names(fn: Any) -> set[str]:
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return {p.name for p in inspect.signature(fn).parameters.values() if p.kind not in kinds} - {"self"}

    run_params = _param_names(bundle_scripts.run)
    own = run_params | _param_names(bundle_scripts.create_workflow) | _param_names(ConfigWorkflow.__init__)

    cli = fire_keyword_args(args[1:], run_params)
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


def check_size(name: str, size: int | Sequence[int], multiple: int, minimum: int | None = None) -> None:
    """Refuse, when the config is read, a size the network cannot take (instead of a shape error mid-run).

    Args:
        name: the config key (for the message).
        size: the value: one size or one per axis.
        multiple: each size must be a multiple of it (the network's total stride).
        minimum: each size must be at least this (default ``multiple``).

    Raises:
        ConfigValueError: naming the key, the value and the sizes that would work.
    """
    sizes = [size] if isinstance(size, (int, float)) else list(size)
    least = int(minimum if minimum is not None else multiple)
    bad = [s for s in sizes if not float(s).is_integer() or int(s) % multiple or int(s) < least]
    if bad:
        near = sorted({max(least, int(s) // multiple * multiple) for s in bad} | {max(least, -(-int(s) // multiple) * multiple) for s in bad})
        raise ConfigValueError(
            f"{name} = {size!r}: the network needs sizes that are multiples of {multiple} and at least {least} "
            f"(it halves them {multiple.bit_length() - 1} times); for example {' or '.join(map(str, near))}."
        )
