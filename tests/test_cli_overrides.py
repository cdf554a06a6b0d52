# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""A ``monai.bundle run`` override that names no config key is refused before anything runs."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import yaml
from conftest import BUNDLE_NAMES, BUNDLES, import_bundle, run_bundle

MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"  # sys.argv[0] under `python -m monai.bundle`
DEMO = "['configs/train.yaml','configs/demo.yaml']"
NAMES = list(BUNDLE_NAMES)


def _check(name: str, monkeypatch):
    """The bundle's ``check_cli_overrides``, with the bundle folder as the working directory."""
    import_bundle(name)
    monkeypatch.chdir(BUNDLES / name)
    return importlib.import_module("scripts.common.overrides").check_cli_overrides


@pytest.mark.parametrize("name", NAMES)
def test_known_keys_pass(name, monkeypatch):
    check = _check(name, monkeypatch)
    check([MAIN, "run", "--config_file", DEMO, "--learning_rate", "0.1", "--run_name=x", "--dataset-dir", "d"])
    check([MAIN, "run", "--config_file", "configs/train.yaml", "--learning_rate", "0.1"])  # a single path
    check([MAIN, "run", "training", "--config_file", DEMO, "--amp", "--device", "cpu"])  # positional run_id, a bool flag
    # the arguments of `run` itself, the keys that --tracking adds, and _meta_ are not config keys but are fine
    check([MAIN, "run", "--config_file", DEMO, "--meta_file", "configs/metadata.json", "--logging_file", "x.conf",
           "--init_id", "initialize", "--final_id", "finalize", "--tracking", "mlflow", "--tracking_uri", "sqlite:///x.db",
           "--experiment_name", "e", "--_meta_#version", "9.9.9"])


@pytest.mark.parametrize("name", NAMES)
def test_known_nested_keys_pass(name, monkeypatch):
    check = _check(name, monkeypatch)
    check([MAIN, "run", "--config_file", DEMO, "--train#trainer#max_epochs", "1", "--train::dataset::cache_rate", "0.0"])
    check([MAIN, "run", "--config_file", DEMO, "--train#handlers#0#_disabled_", "True"])  # a list index
    check([MAIN, "run", "--config_file", DEMO, "--network_def#n_filters", "8"])  # a (new) entry of an existing dict


@pytest.mark.parametrize("name", NAMES)
def test_a_typo_is_refused_with_a_suggestion(name, monkeypatch):
    check = _check(name, monkeypatch)
    with pytest.raises(ValueError, match="unknown config key 'lerning_rate'") as err:
        check([MAIN, "run", "--config_file", DEMO, "--lerning_rate", "0.1"])
    msg = str(err.value)
    assert "did you mean 'learning_rate'" in msg and "configs/train.yaml + configs/demo.yaml" in msg
    with pytest.raises(ValueError, match=r"did you mean 'train#trainer#max_epochs'"):
        check([MAIN, "run", "--config_file", DEMO, "--trian#trainer#max_epochs=1"])
    with pytest.raises(ValueError, match="'learning_rate#x'"):  # learning_rate is a number: it has no entries
        check([MAIN, "run", "--config_file", DEMO, "--learning_rate#x", "1"])
    with pytest.raises(ValueError, match="'train#handlers#first'"):  # a list takes indices only
        check([MAIN, "run", "--config_file", DEMO, "--train#handlers#first", "1"])
    with pytest.raises(ValueError, match="'output_dir#x'"):  # output_dir is an expression, not a dict
        check([MAIN, "run", "--config_file", DEMO, "--output_dir#x", "1"])


@pytest.mark.parametrize("name", NAMES)
def test_args_file_keys_are_checked(name, monkeypatch, tmp_path):
    check = _check(name, monkeypatch)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"config_file": ["configs/train.yaml", "configs/demo.yaml"], "learning_rate": 0.1}))
    bad.write_text(json.dumps({"config_file": "configs/train.yaml", "lerning_rate": 0.1}))
    check([MAIN, "run", "--args_file", str(good), "--val_interval", "2"])
    with pytest.raises(ValueError, match=f"'lerning_rate' given in {bad}"):
        check([MAIN, "run", "--args_file", str(bad)])


@pytest.mark.parametrize("name", NAMES)
def test_other_command_lines_are_left_alone(name, monkeypatch):
    check = _check(name, monkeypatch)
    check()  # this process is pytest
    check(["/usr/bin/pytest", "run", "--config_file", DEMO, "--lerning_rate", "0.1"])
    check(["/opt/monailabel/main.py", "start_server", "--lerning_rate", "0.1"])  # MONAI Label calls run() in-process
    check([MAIN, "verify_metadata", "--config_file", DEMO, "--lerning_rate", "0.1"])
    check([MAIN, "run", "--config_file", DEMO, "--", "--lerning_rate"])  # after a lone "--": python-fire's own flags


@pytest.mark.parametrize("name", NAMES)
def test_the_check_is_the_first_step_of_every_workflow(name):
    """First of ``initialize`` (before ``set_determinism(seed=@seed)`` reads an override), else of ``run``.

    Only the bundle-folder check (which makes the bundle's code importable) and the error-report hook come before
    it, so that a refused override is reported in a few lines.
    """
    workflows = []
    first = [{"_target_": "scripts.common.errors.install_error_summary"},
             {"_target_": "scripts.common.overrides.check_cli_overrides"}]
    for path in sorted((BUNDLES / name / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if "initialize" in config:
            assert config["initialize"][:3] == ["@locate_bundle", *first], path
        if "run" in config:
            workflows.append(path.name)
            if "initialize" not in config:
                assert config["run"][:2] == first, path
    assert {"train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml"} <= set(workflows)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_misspelt_override_stops_the_run_before_anything_is_written(name, tmp_path):
    b = tmp_path / name
    shutil.copytree(BUNDLES / name, b, ignore=shutil.ignore_patterns("runs", "data", "models", "predictions", "__pycache__"))
    proc = run_bundle(b, ["configs/train.yaml", "configs/demo.yaml"], "--lerning_rate", "0.1", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "unknown config key 'lerning_rate' given on the command line (did you mean 'learning_rate'?)" in out, out[-3000:]
    assert "Traceback" not in out and "while creating scripts.common.overrides.check_cli_overrides() from the config" in out
    assert not (b / "runs").exists() or not any((b / "runs").iterdir()), "an output folder was created"
    assert not (b / "data").exists(), "the phantom data were generated"
    assert not (b / "models").exists()


@pytest.mark.parametrize("name", NAMES)
def test_a_lowercase_boolean_is_refused(name, monkeypatch):
    """python-fire reads ``--amp false`` as the string "false", which would switch AMP on."""
    check = _check(name, monkeypatch)
    with pytest.raises(ValueError, match="--amp false: this key takes True or False"):
        check([MAIN, "run", "--config_file", DEMO, "--amp", "false"])
    with pytest.raises(ValueError, match="--amp no: this key takes"):
        check([MAIN, "run", "--config_file", DEMO, "--amp=no"])
    check([MAIN, "run", "--config_file", DEMO, "--amp", "False", "--run_name", "false"])  # a str key may say "false"
    # a key whose default is null takes a bool or None: the string "false" would publish the model
    with pytest.raises(ValueError, match="--publish_model false: write True, False or None"):
        check([MAIN, "run", "--config_file", DEMO, "--publish_model", "false"])
    check([MAIN, "run", "--config_file", DEMO, "--publish_model", "False"])


@pytest.mark.parametrize("name", NAMES)
def test_a_value_of_another_type_than_the_configs_is_refused(name, monkeypatch):
    """``--amp maybe`` trained in AMP (a string is true), ``--seed abc`` failed inside ``set_determinism``."""
    check = _check(name, monkeypatch)
    for args, message in [(["--amp", "maybe"], "--amp 'maybe': this key takes True or False"),
                          (["--amp", "1"], "--amp 1: this key takes True or False"),
                          (["--seed", "abc"], "--seed 'abc': this key takes a whole number"),
                          (["--batch_size", "2.5"], "--batch_size 2.5: this key takes a whole number"),
                          (["--learning_rate", "abc"], "--learning_rate 'abc': this key takes a number"),
                          (["--run_name", "2"], "--run_name 2: this key takes a string: quote the number, "
                                                "--run_name \"'2'\"")]:
        with pytest.raises(ValueError) as err:  # train.yaml: literal defaults (the demo's batch_size is an expression)
            check([MAIN, "run", "--config_file", "configs/train.yaml", *args])
        assert str(err.value).startswith(message), str(err.value)
    # the same types pass, an int for a float too; expressions, references and None are not checked
    check([MAIN, "run", "--config_file", DEMO, "--amp", "True", "--seed", "3", "--learning_rate", "1",
           "--batch_size", "$2 * 2", "--run_name", "'2'", "--max_epochs", "@seed", "--dataset_dir", "None"])
