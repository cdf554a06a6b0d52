# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""``monai.bundle run`` reports a bad config value, input file or weights file in a few lines, not tracebacks."""

from __future__ import annotations

import importlib
import re
import shutil
import sys

import pytest
from conftest import BUNDLE_NAMES, BUNDLES, import_bundle, run_bundle

NAMES = list(BUNDLE_NAMES)
MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"  # sys.argv[0] under `python -m monai.bundle`
SET_DEBUG = "\n set '_mode_=debug' to enter the debugging mode."  # the second line of MONAI's wrapper message


def _raised(exc: BaseException, wrapper: BaseException | None = None) -> BaseException:
    """``exc`` raised (with a traceback), and ``wrapper`` raised from it as MONAI's resolver does."""
    try:
        try:
            raise exc
        except BaseException as inner:
            if wrapper is None:
                raise
            raise wrapper from inner
    except BaseException as outer:
        return outer


def _errors(name: str):
    """The bundle's ``scripts.common.errors``."""
    import_bundle(name)
    return importlib.import_module("scripts.common.errors")


@pytest.mark.parametrize("name", NAMES)
def test_summary_of_wrapped_input_and_config_errors(name):
    errors = _errors(name)
    data_error = importlib.import_module("scripts.common.errors").DataError
    wrapped = _raised(data_error("input image not found: /x.png"),
                      RuntimeError("Failed to instantiate component 'scripts.data.list_images' with keywords: inputs"
                                   + SET_DEBUG))
    assert errors.error_summary(wrapped).splitlines() == [
        "DataError: input image not found: /x.png",
        "  while creating scripts.data.list_images(inputs) from the config",
        f"  ({errors.TRACEBACK_ENV}=1 shows the full traceback)",
    ]
    # a bad value fails inside a library: the innermost error and the component being created
    bad_value = _raised(ValueError("batch_size should be a positive integer value, but got batch_size=0"),
                        RuntimeError("Failed to instantiate component 'monai.data.dataloader.DataLoader' with "
                                     "keywords: dataset,batch_size" + SET_DEBUG))
    assert errors.error_summary(bad_value).splitlines()[:2] == [
        "ValueError: batch_size should be a positive integer value, but got batch_size=0",
        "  while creating monai.data.dataloader.DataLoader(dataset, batch_size) from the config",
    ]
    # the bundle's own input errors are found anywhere in the chain, also under "Failed to evaluate"
    weights = _raised(errors.MissingWeightsError("no weights at ckpt_path = /m.pt"),
                      RuntimeError("Failed to evaluate ConfigExpression: $@evaluator.run()"))
    assert isinstance(weights.__cause__, FileNotFoundError)
    assert errors.error_summary(weights).splitlines()[0] == "MissingWeightsError: no weights at ckpt_path = /m.pt"
    assert "while creating" not in errors.error_summary(weights)


@pytest.mark.parametrize("name", NAMES)
def test_an_undefined_reference_is_reported_with_the_overlay_hint(name):
    """``configs/evaluate.yaml`` run on its own: MONAI's resolver raises from a lookup error inside ``monai.utils``."""
    from monai.bundle import ConfigParser

    errors = _errors(name)
    parser = ConfigParser({"run": ["$@test::evaluator.run()"]})
    with pytest.raises(ValueError) as info:
        parser.get_parsed_content("run#0")
    assert not errors._raised_in_monai_bundle(info.value.__cause__)  # the innermost error is not the one to show
    assert errors.error_summary(info.value).splitlines() == [
        "ValueError: the referring item `@test::evaluator` is not defined in the config content.",
        f"  {errors.OVERLAY_HINT}",
        f"  ({errors.TRACEBACK_ENV}=1 shows the full traceback)",
    ]
    # a missing key is summarised too, without the overlay hint
    with pytest.raises(KeyError) as info:
        parser["train#trainer"]
    assert errors.error_summary(info.value).splitlines()[0] == "KeyError: 'query key: train'"
    assert errors.OVERLAY_HINT not in errors.error_summary(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_other_errors_keep_their_traceback(name):
    errors = _errors(name)
    crash = _raised(RuntimeError("CUDA out of memory"), RuntimeError("Failed to evaluate ConfigExpression: $run()"))
    assert errors.error_summary(crash) is None
    assert errors.error_summary(_raised(ZeroDivisionError("division by zero"))) is None


@pytest.mark.parametrize("name", NAMES)
def test_the_hook_reports_briefly_and_passes_other_errors_on(name, monkeypatch, capsys):
    errors = _errors(name)
    seen = []
    monkeypatch.delenv(errors.TRACEBACK_ENV, raising=False)
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))
    assert errors.install_error_summary([MAIN])
    assert errors.install_error_summary([MAIN])  # installed once
    hook = sys.excepthook
    assert hook.error_summary
    error = _raised(importlib.import_module("scripts.common.errors").DataError("empty labeled list in d.json"))
    hook(type(error), error, error.__traceback__)
    assert capsys.readouterr().err.startswith("DataError: empty labeled list in d.json\n") and not seen
    other = _raised(KeyError("x"))
    hook(type(other), other, other.__traceback__)
    assert seen == [other]  # went to the hook that was there before
    # SSL_BUNDLES_TRACEBACK=1 leaves Python's hook alone
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    assert not errors.install_error_summary([MAIN])
    assert sys.excepthook is sys.__excepthook__


@pytest.mark.parametrize("name", NAMES)
def test_the_hook_is_installed_on_the_monai_bundle_command_line_only(name, monkeypatch):
    """MONAI Label, pytest and other processes that run a workflow in-process keep their own hook."""
    errors = _errors(name)
    monkeypatch.delenv(errors.TRACEBACK_ENV, raising=False)
    before = sys.excepthook  # pytest's or Python's
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest", "tests"])
    for argv in [None, [], ["/usr/bin/pytest"], ["/opt/monailabel/main.py", "start_server"],
                 ["/venv/lib/python3.11/site-packages/monai/bundle/utils.py"], ["-c"]]:
        assert errors.install_error_summary(argv) is False, argv
        assert sys.excepthook is before, argv
    monkeypatch.setattr(sys, "excepthook", before)  # put back when the test ends
    assert errors.install_error_summary([MAIN, "run", "--config_file", "configs/train.yaml"]) is True
    assert sys.excepthook is not before and sys.excepthook.error_summary
    monkeypatch.setattr(sys, "argv", [MAIN, "run"])
    assert errors.install_error_summary() is True  # argv None: sys.argv


@pytest.mark.slow
@pytest.mark.parametrize(("name", "missing"), [("switch_us", "/nonexistent/case.png"),
                                               ("crossmatch_3d", "/nonexistent/case.nii.gz"),
                                               ("localcontrast_2d", "/nonexistent/case.nii.gz")])
def test_a_missing_input_is_one_error_line_on_the_command_line(name, missing, tmp_path, monkeypatch):
    b = tmp_path / name
    shutil.copytree(BUNDLES / name, b, ignore=shutil.ignore_patterns("runs", "data", "models", "predictions", "__pycache__"))
    monkeypatch.delenv("SSL_BUNDLES_TRACEBACK", raising=False)
    proc = run_bundle(b, ["configs/inference.yaml"], "--input", missing, timeout=300)
    err = proc.stderr
    assert proc.returncode == 1, err[-3000:]
    assert f"DataError: input {'image' if name == 'switch_us' else 'volume'} not found: {missing}\n" in err, err[-3000:]
    assert "Traceback" not in err and "SSL_BUNDLES_TRACEBACK=1 shows the full traceback" in err
    monkeypatch.setenv("SSL_BUNDLES_TRACEBACK", "1")
    proc = run_bundle(b, ["configs/inference.yaml"], "--input", missing, timeout=300)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr and missing in proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_an_overlay_run_on_its_own_says_what_to_run(name, monkeypatch):
    """``configs/evaluate.yaml`` without ``configs/train.yaml``: one error line and the command to use."""
    monkeypatch.delenv("SSL_BUNDLES_TRACEBACK", raising=False)
    proc = run_bundle(BUNDLES / name, ["configs/evaluate.yaml"], timeout=300)
    err = proc.stderr
    assert proc.returncode == 1, err[-3000:]
    assert re.search(r"ValueError: the referring item `@[\w:]+` is not defined in the config content\.\n", err), err
    assert "\"['configs/train.yaml','configs/evaluate.yaml']\"" in err and "Traceback" not in err, err[-3000:]
