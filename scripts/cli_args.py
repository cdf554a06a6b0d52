# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Type checks of a python-fire command line against the type hints of the function it calls.

python-fire turns each value into the Python literal it reads as (``0.1`` a float, ``True`` a bool, ``0,4`` a
tuple) and leaves anything else a string, without looking at the function's type hints: ``--labeled_ratio abc``
reaches the function as ``'abc'`` and fails deep inside it, and ``--overwrite no`` is a true string. The
repository's tools (run as files, so this module is found beside them) wrap their commands with :func:`checked`
to refuse such values in one line before any work starts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["check_arguments", "checked"]

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
