# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""``scripts/cli_args.py``: a python-fire command line checked against the command's type hints."""

from __future__ import annotations

import pytest

import cli_args  # scripts/, put on sys.path by conftest


class UsageError(ValueError):
    pass


CALLS: list[str] = []


def command(source: str, *outputs: str, ratio: float = 0.1, seed: int | None = None, overwrite: bool = False,
            names: str | list[str] | None = None, **extra: int) -> dict:
    """A command with the kinds of hints the tools use."""
    CALLS.append(source)
    return {"source": source, "outputs": outputs, "ratio": ratio, "seed": seed, "overwrite": overwrite,
            "names": names, "extra": extra}


def _call(*args, **kwargs) -> dict:
    return cli_args.checked(command, UsageError)(*args, **kwargs)


def test_values_of_the_hinted_type_pass_and_numbers_for_strings_become_strings():
    got = _call("src", "o1", 2024, ratio=1, seed=None, overwrite=True, names=["a", 3], n=2)
    assert got == {"source": "src", "outputs": ("o1", "2024"), "ratio": 1, "seed": None, "overwrite": True,
                   "names": ["a", 3], "extra": {"n": 2}}
    assert _call(7)["source"] == "7" and _call("s", ratio=0.25, seed=3)["seed"] == 3


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("s",), {"ratio": "abc"}, "--ratio must be float, got 'abc'"),
    (("s",), {"ratio": (0, 4)}, r"--ratio must be float, got \(0, 4\)"),  # fire reads "0,4" as a tuple
    (("s",), {"ratio": True}, "--ratio must be float, got True"),
    (("s",), {"seed": 2.5}, "--seed must be int or None, got 2.5"),
    (("s",), {"seed": False}, "--seed must be int or None, got False"),
    (("s",), {"overwrite": "no"}, "--overwrite must be bool, got 'no'"),
    (("s", True), {}, "--outputs must be str, got True"),
    (("s",), {"n": "x"}, "--n must be int, got 'x'"),
    ((), {}, "command: missing a required argument: 'source'"),
])
def test_wrong_values_are_refused_before_the_command_runs(args, kwargs, message):
    CALLS.clear()
    with pytest.raises(UsageError, match=message):
        _call(*args, **kwargs)
    assert not CALLS


def test_the_wrapper_keeps_the_signature_and_docstring_for_help():
    import inspect

    wrapped = cli_args.checked(command, UsageError)
    assert inspect.signature(wrapped) == inspect.signature(command) and wrapped.__doc__ == command.__doc__


def plain(source: str, ratio: float = 0.1, seed: int | None = None, save: str | None = None) -> str:
    """A command without ``**kwargs``: fire would run it and only then report an option it does not take."""
    CALLS.append(source)
    return f"{source} {ratio} {seed}"


@pytest.mark.parametrize(("argv", "message"), [
    (["s", "--ratoi", "0.2"], r"plain: unknown option --ratoi; did you mean --ratio\?"),
    (["s", "--rati-o=0.2"], "unknown option --rati_o"),
    (["s", "--zzz"], r"unknown option --zzz \(the options: --source, --ratio, --seed, --save; see --help\)"),
    (["s", "-x", "1"], "-x matches no option"),
    (["s", "-s", "1"], r"-s is ambiguous \(--source, --seed, --save\)"),
])
def test_an_unknown_option_is_refused_before_the_command_runs(argv, message):
    CALLS.clear()
    with pytest.raises(UsageError, match=message):
        cli_args.fire_cli(plain, UsageError, argv)
    with pytest.raises(UsageError, match=message):
        cli_args.fire_cli({"go": plain}, UsageError, ["go", *argv])
    assert CALLS == []


def test_known_options_in_fires_forms_reach_the_command():
    CALLS.clear()
    serial = {"serialize": lambda _: None}
    assert cli_args.fire_cli(plain, UsageError, ["s", "--ratio=0.5", "-r", "0.25"], **serial) == "s 0.25 None"
    assert cli_args.fire_cli(plain, UsageError, ["--source", "t", "--seed", "3"], **serial) == "t 0.1 3"
    assert cli_args.fire_cli({"go": plain}, UsageError, ["go", "u", "--", "--verbose"], **serial) == "u 0.1 None"
    assert cli_args.fire_cli(command, UsageError, ["s", "--any_extra", "4"], **serial)["extra"] == {"any_extra": 4}
    assert CALLS == ["s", "t", "u", "s"]
    with pytest.raises(UsageError, match="--ratio must be float"):  # the values are still checked
        cli_args.fire_cli(plain, UsageError, ["s", "--ratio", "abc"])


def test_output_folder_is_created_or_refused_in_one_line(tmp_path):
    made = cli_args.output_folder(tmp_path / "a" / "b", UsageError)
    assert made == (tmp_path / "a" / "b") and made.is_dir()
    assert cli_args.output_folder(made, UsageError) == made  # an existing folder is fine
    a_file = tmp_path / "file"
    a_file.write_text("kept")
    with pytest.raises(UsageError, match=r"--out .*file is a file, not a folder; pass another --out"):
        cli_args.output_folder(a_file, UsageError, "--out")
    with pytest.raises(UsageError, match=r"cannot create --output .*file/sub"):
        cli_args.output_folder(a_file / "sub", UsageError)
    assert a_file.read_text() == "kept"
