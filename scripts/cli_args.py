# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Type checks of a python-fire command line against the type hints of the function it calls.

python-fire turns each value into the Python literal it reads as (``0.1`` a float, ``True`` a bool, ``0,4`` a
tuple) and leaves anything else a string, without looking at the function's type hints: ``--labeled_ratio abc``
reaches the function as ``'abc'`` and fails deep inside it, and ``--overwrite no`` is a true string. The
repository's tools (run as files, so this module is found beside them) wrap their commands with :func:`checked`
to refuse such values in one line before any work starts.

fire also calls a function with the options it knows and only then reports one it does not: ``quality.py run ...
--iteration 0.5`` would train the whole protocol at the default budget before saying ``Could not consume arg:
--iteration``. :func:`fire_cli` runs the checked commands after :func:`check_options` has refused such options.

:func:`output_folder` creates a tool's output folder, or refuses in one line a path that cannot be one.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_arguments", "check_options", "checked", "fire_cli", "output_folder"]

_SCALARS = {"str": str, "int": int, "float": float, "bool": bool}


def _typed(value: Any, hint: str, name: str, error: type[Exception]) -> Any:
    """``value`` checked against a scalar type hint (``float``, ``int | None``...); other hints pass it unchanged.

    A number given for a ``str`` option (fire reads ``--output 2024`` as an int) becomes its string; an int is a
    valid float; a bool is neither an int nor a float.
    """
    options = [part.strip() for part in hint.split("|")]
    if value is None and "None" in options:
        return None
    kinds = [_SCALARS[o] for o in options if o in _SCALARS]
    if len(kinds) != len([o for o in options if o != "None"]):
        return value  # Any, lists, dicts: left to the function
    if isinstance(value, bool):
        ok = bool in kinds
    elif isinstance(value, int):
        ok = int in kinds or float in kinds
    elif isinstance(value, float):
        ok = float in kinds
    else:
        ok = isinstance(value, str) and str in kinds
    if not ok and str in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not ok:
        wanted = " or ".join(k.__name__ for k in kinds) + (" or None" if "None" in options else "")
        raise error(f"--{name} must be {wanted}, got {value!r}")
    return value


def check_arguments(
    function: Callable[..., Any], args: tuple, kwargs: dict[str, Any], error: type[Exception] = ValueError
) -> tuple[tuple, dict[str, Any]]:
    """Bind a command line to ``function``'s signature and check each scalar argument against its type hint.

    Args:
        function: the command; its hints are read as strings (``from __future__ import annotations``).
        args: the positional values fire passes.
        kwargs: the ``--name value`` values fire passes.
        error: the exception class the tool reports in one line.

    Returns:
        The arguments to call ``function`` with.

    Raises:
        error: a missing or unknown argument, or a value of the wrong type.
    """
    signature = inspect.signature(function)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise error(f"{function.__name__}: {exc} (see --help)") from exc
    for name, value in bound.arguments.items():
        parameter = signature.parameters[name]
        if not isinstance(parameter.annotation, str):
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:  # *outputs: str
            bound.arguments[name] = tuple(_typed(v, parameter.annotation, name, error) for v in value)
        elif parameter.kind is parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: _typed(v, parameter.annotation, k, error) for k, v in value.items()}
        else:
            bound.arguments[name] = _typed(value, parameter.annotation, name, error)
    return bound.args, bound.kwargs


def checked(function: Callable[..., Any], error: type[Exception] = ValueError) -> Callable[..., Any]:
    """``function`` behind :func:`check_arguments`, with its signature and docstring kept for fire's ``--help``."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = check_arguments(function, args, kwargs, error)
        return function(*args, **kwargs)

    return call


def _option_problem(names: Sequence[str], token: str) -> str | None:
    """Why ``token`` (``--name``, ``--name=value``, ``-n``) names none of the options ``names`` for fire, or None."""
    if re.fullmatch(r"-[A-Za-z]", token):  # fire's short form: the one option starting with that letter
        matching = [n for n in names if n.startswith(token[1])]
        if token == "-h" or len(matching) == 1:
            return None
        what = f"is ambiguous ({', '.join('--' + n for n in matching)})" if matching else "matches no option"
        return f"{token} {what}"
    if not token.startswith("--") or len(token) == 2:
        return None  # a value, or fire's separator
    key = token[2:].partition("=")[0].replace("-", "_")
    if key in names or key == "help" or (key.startswith("no") and key[2:] in names):  # --noamp: amp False
        return None
    close = difflib.get_close_matches(key, names, n=1)
    return f"unknown option --{key}" + (f"; did you mean --{close[0]}?" if close else "")


def check_options(
    commands: Callable[..., Any] | Mapping[str, Callable[..., Any]], argv: Sequence[str], error: type[Exception]
) -> None:
    """Refuse a command line with an option its command does not take, before fire runs the command.

    Args:
        commands: the function fire calls, or the mapping of command names to functions (``argv[0]`` names one).
        argv: the command line without the program name; fire's own flags after a lone ``--`` are not checked.
        error: the exception class the tool reports in one line.

    Raises:
        error: naming the option, the closest one the command takes, and all of them.
    """
    args = list(argv)
    if "--" in args:
        args = args[: len(args) - 1 - args[::-1].index("--")]
    if isinstance(commands, Mapping):
        if not args or args[0] not in commands:
            return  # fire names the commands
        function, args = commands[args[0]], args[1:]
    else:
        function = commands
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return  # it takes any option
    options = [p.name for p in parameters if p.kind is not p.VAR_POSITIONAL]
    for token in args:
        if problem := _option_problem(options, token):
            raise error(f"{function.__name__}: {problem} (the options: {', '.join('--' + o for o in options)}; "
                        "see --help)")


def output_folder(path: str | Path, error: type[Exception], option: str = "--output") -> Path:
    """Create the output folder ``path`` (and its parents) if needed and return it as an absolute path.

    Args:
        path: the folder a tool writes to.
        error: the exception class the tool reports in one line.
        option: the command-line option that names the folder, for the message.

    Raises:
        error: ``path`` is a file, or cannot be created or written (naming the option to change).
    """
    out = Path(str(path)).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise error(f"{option} {out} is a file, not a folder; pass another {option}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create {option} {out}: {e.strerror or e}; pass another {option}") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise error(f"{option} {out} is not writable; pass another {option}")
    return out


def fire_cli(
    commands: Callable[..., Any] | Mapping[str, Callable[..., Any]],
    error: type[Exception],
    argv: Sequence[str] | None = None,
    **fire_kwargs: Any,
) -> Any:
    """``fire.Fire`` on ``commands`` behind :func:`checked`, after :func:`check_options` has read the command line.

    Args:
        commands: one function, or command names mapped to functions.
        error: the exception class the tool reports in one line (raised for unknown options and bad values).
        argv: the command line without the program name (default ``sys.argv[1:]``).
        fire_kwargs: passed to ``fire.Fire`` (``serialize``...).

    Returns:
        What the command returned.
    """
    import fire  # here, so that importing this module stays cheap (verify_bundle's worker processes)

    argv = list(sys.argv[1:] if argv is None else argv)
    check_options(commands, argv, error)
    if isinstance(commands, Mapping):
        target: Any = {key: checked(fn, error) for key, fn in commands.items()}
    else:
        target = checked(commands, error)
    return fire.Fire(target, command=argv, **fire_kwargs)
