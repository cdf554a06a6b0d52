# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""The project's bad-input matrix: each bad input a user can give a tool, the clear error it gets, and proof
that nothing the user had was changed.

Every row of :data:`CASES` is a :class:`Case`: an id, a ``setup`` that builds the bad input (and whatever the
user already had, e.g. a prepared dataset to ``--overwrite``) under the test's own folder and returns a
:class:`Trial`, and the fragment (a regular expression) the error message must contain. The test snapshots
the trial's watched folders (names and bytes of every file; an absent folder must stay absent), runs the
trial, expects the error (a few lines at most, no traceback from the command line) and compares the
snapshots. A failed run must also leave no temporary sibling folder (``<output>.partial-*``) behind.

A second table, :data:`HANDLED`, holds the inputs the bundles take rather than refuse, each with the check that
they are taken correctly: a 16-bit PNG or a CT volume in Hounsfield units reaches the network on the trained
scale, a declared class that no label holds is named in a warning, Ctrl-C stops in one line that says how to
resume, a few-iteration trial run leaves the published ``models/model.pt`` alone.

To add a case: write a ``setup(tmp: Path) -> Trial`` beside the others (reuse the small source builders) and
append a row to ``CASES``; a tool other than ``prepare_data.py`` sets ``raises`` to its own error class, or
uses :func:`_cli` to run its command line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE_NAMES, TWO_D_BUNDLES
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PREPARE_DATA = REPO / "scripts" / "prepare_data.py"


def _load(path: Path, name: str):
    """Import a repository tool as a stand-alone module (the bundles own a package named ``scripts``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pdt = _load(PREPARE_DATA, "prepare_data_tool")


# ---------------------------------------------------------------------------------------------
# the table's machinery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """What a case runs and which folders must come out of it exactly as they went in."""

    run: Callable[[], object]
    watched: tuple[Path, ...]


@dataclass(frozen=True)
class Case:
    """One row of the matrix: ``setup(tmp)`` builds the bad input; ``error`` is searched in the message."""

    id: str
    setup: Callable[[Path], Trial]
    error: str
    raises: type[BaseException] = field(default=pdt.DatasetPreparationError)


class CommandLineError(Exception):
    """A command line that exited with status 2: its message is the ERROR lines it printed."""


def _cli(script: Path, *args: object) -> Callable[[], object]:
    """Run a tool's command line; raise :class:`CommandLineError` when it refuses (status 2, no traceback)."""

    def run() -> None:
        proc = subprocess.run(
            [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300
        )
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output, output
        if proc.returncode != 0:
            assert proc.returncode == 2, output
            raise CommandLineError("\n".join(line for line in output.splitlines() if " ERROR " in line))

    return run


def _snapshot(folder: Path) -> dict[str, str] | None:
    """Every path under ``folder`` with a hash of its bytes (``None`` when the folder is absent)."""
    if not folder.exists():
        return None
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------------------------------------
# small sources
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# the bundles (python -m monai.bundle run), on a copy of the bundle's code and configs
# ---------------------------------------------------------------------------------------------

BUNDLES = REPO / "bundles"


class BundleRunError(Exception):
    """A ``monai.bundle run`` that stopped with an error: its message is what the run printed on stderr."""


def _bundle_copy(tmp: Path, bundle: str) -> Path:
    """The bundle's code and configs (no data, runs or models) in a folder of the test's own."""
    import shutil

    root = tmp / bundle
    for part in ("configs", "scripts"):
        shutil.copytree(BUNDLES / bundle / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _bundle_run(root: Path, configs: list[str], *args: object) -> Callable[[], object]:
    """``python -m monai.bundle run`` in ``root``; raise :class:`BundleRunError` with its stderr when it fails."""

    def run() -> None:
        import os

        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("SSL_BUNDLES_TRACEBACK", None)
        proc = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs), *map(str, args)],
            cwd=root, capture_output=True, text=True, timeout=300, env=env,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode != 0:  # the report starts at "<Error>: ..." (MONAI warns about config trust before it)
            lines = proc.stderr.strip().splitlines()
            start = next((i for i, line in enumerate(lines) if re.match(r"\w+(Error|Exception): ", line)), 0)
            raise BundleRunError("\n".join(lines[start:]))

    return run


def _fake_model(root: Path, settings: dict) -> None:
    """A ``models/model.pt`` that records ``settings`` (its weights are never loaded by a refused run)."""
    import torch

    (root / "models").mkdir()
    torch.save({"model": {}, "settings": settings}, root / "models" / "model.pt")


def _run_name_outside(bundle: str) -> Callable[[Path], Trial]:
    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        configs = ["configs/train.yaml", "configs/demo.yaml"]
        return Trial(_bundle_run(root, configs, "--run_name", "../../escape"), (tmp,))

    return setup


def _inference_run_name_outside(bundle: str) -> Callable[[Path], Trial]:
    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        return Trial(_bundle_run(root, ["configs/inference.yaml"], "--run_name", "a/b"), (tmp,))

    return setup


MODEL_SIZES: dict[str, tuple[dict, tuple]] = {
    "crossmatch_3d": ({"task": "la", "num_classes": 2, "roi_size": [48, 48, 32]}, ("--roi_size", "[112,112,80]")),
    "localcontrast_2d": ({"num_classes": 4, "image_size": 128}, ("--image_size", 256)),  # its 4 ACDC classes
}
"""Per bundle: the size settings a model records and an evaluation option that contradicts them (default: a 2D
model of two classes trained at 128 px, evaluated at 256)."""


def _evaluate_contradicts_model(bundle: str) -> Callable[[Path], Trial]:
    """The README's evaluation command with a size other than the model's (the demo trains at 128 px / 48x48x32)."""

    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        settings, option = MODEL_SIZES.get(bundle, ({"image_size": 128, "num_classes": 2}, ("--image_size", 256)))
        _fake_model(root, {"bundle": bundle, **settings})
        return Trial(_bundle_run(root, ["configs/train.yaml", "configs/evaluate.yaml"], *option), (tmp,))

    return setup


def _inference_contradicts_model(bundle: str) -> Callable[[Path], Trial]:
    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        _fake_model(root, {"bundle": bundle, "num_classes": 3})
        return Trial(_bundle_run(root, ["configs/inference.yaml"], "--num_classes", 2), (tmp,))

    return setup


def _size_the_network_cannot_take(bundle: str, option: tuple, configs: tuple = ()) -> Callable[[Path], Trial]:
    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        run = _bundle_run(root, ["configs/train.yaml", *configs, "configs/demo.yaml"], *option)
        return Trial(run, (tmp,))

    return setup


LABEL_CLASSES = {"localcontrast_2d": 4}
"""The classes (background included) that :func:`_small_dataset`'s labels hold, where a bundle needs more than two:
localcontrast_2d trains on slices holding at least 3 labels (``seg_min_classes``) and contrasts slices holding all 4
(its 4 declared ACDC classes)."""

NEEDS_UNLABELED = ("localcontrast_2d",)
"""The bundles whose training stops without an 'unlabeled' list (its volumes are pseudo-labelled every round)."""


def _small_dataset(tmp: Path, bundle: str, *, kind: str = "fine", n: int = 3, label_value: int | None = None,
                   classes: int | None = None) -> Path:
    """A prepared dataset of ``n`` 32-pixel images (2D PNG or 3D NIfTI): two labelled, the rest validation.

    ``kind`` makes the second labelled image ``constant`` (uniform grey) or ``tiny`` (4 pixels on a side). The
    labels hold the classes ``1..classes-1`` (default :data:`LABEL_CLASSES`, else 2: class 1 alone), one quadrant
    each; ``label_value`` makes them hold that one value instead. With ``n >= 5`` every list is filled (unlabelled,
    validation and test items after the two labelled ones).
    """
    classes = LABEL_CLASSES.get(bundle, 2) if classes is None else classes
    values = list(range(1, classes)) if label_value is None else [label_value]
    data = tmp / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        side = 4 if (kind == "tiny" and i == 1) else 32
        shape = (side, side) if bundle in TWO_D_BUNDLES else (side, side, 16)
        image = rng.integers(1, 255, shape).astype(np.uint8)
        if kind == "constant" and i == 1:
            image[:] = 128
        label = np.zeros(shape, np.uint8)
        half = side // 2
        quadrants = [(slice(None, half), slice(None, half)), (slice(None, half), slice(half, None)),
                     (slice(half, None), slice(None, half))]
        for value, (rows, cols) in zip(values, quadrants, strict=False):
            label[rows, cols] = value
        if bundle in TWO_D_BUNDLES:
            Image.fromarray(image).save(data / "images" / f"c{i}.png")
            Image.fromarray(label).save(data / "labels" / f"c{i}.png")
            items.append({"image": f"images/c{i}.png", "label": f"labels/c{i}.png", "case": f"c{i}"})
        else:
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(data / "images" / f"c{i}.nii.gz"))
            nib.save(nib.Nifti1Image(label, np.eye(4)), str(data / "labels" / f"c{i}.nii.gz"))
            items.append({"image": f"images/c{i}.nii.gz", "label": f"labels/c{i}.nii.gz", "case": f"c{i}"})
    lists = {"labeled": items[:2], "validation": items[2:], "test": []}
    if n >= 5:  # every list: two labelled, then unlabelled, validation and test items
        lists = {"labeled": items[:2], "unlabeled": items[2:n - 2], "validation": items[n - 2:n - 1], "test": items[n - 1:]}
    (data / "datalist.json").write_text(json.dumps(lists))
    return data


def _degenerate_image(bundle: str, kind: str) -> Callable[[Path], Trial]:
    """A prepared dataset whose second labelled image is constant (uniform grey) or tiny (4 pixels on a side)."""

    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        data = _small_dataset(tmp, bundle, kind=kind)
        run = _bundle_run(root, ["configs/train.yaml", "configs/demo.yaml"], "--dataset_dir", data)
        return Trial(run, (tmp,))

    return setup


def _more_classes_than_declared(bundle: str) -> Callable[[Path], Trial]:
    """Labels that hold class C where the config declares C classes (0..C-1: two, or :data:`LABEL_CLASSES`)."""

    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        data = _small_dataset(tmp, bundle, label_value=LABEL_CLASSES.get(bundle, 2))
        run = _bundle_run(root, ["configs/train.yaml", "configs/demo.yaml"], "--dataset_dir", data)
        return Trial(run, (tmp,))

    return setup


def _from_the_repository_root(bundle: str, config: str) -> Callable[[Path], Trial]:
    """The bundle started from the folder above ``bundles/`` (its configs named by path, no --bundle_root)."""

    def setup(tmp: Path) -> Trial:
        _bundle_copy(tmp / "bundles", bundle)
        return Trial(_bundle_run(tmp, [f"bundles/{bundle}/configs/{config}"]), (tmp,))

    return setup


def _models_folder_is_a_file(bundle: str) -> Callable[[Path], Trial]:
    """An output location that cannot be written (``models`` is a file): refused before any training."""

    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, bundle)
        (root / "models").write_text("not a folder")
        data = _small_dataset(tmp, bundle)
        run = _bundle_run(root, ["configs/train.yaml", "configs/demo.yaml"], "--dataset_dir", data)
        return Trial(run, (tmp,))

    return setup


GENERATE = ["configs/generate.yaml", "configs/demo.yaml"]
TINY_GENERATION = ("--autoencoder_iterations", 2, "--diffusion_iterations", 2, "--num_samples", 2,
                   "--num_inference_steps", 2, "--batch_size", 2, "--save_interval", 1, "--log_interval", 1)


def _generate(bundle_setup: Callable[[Path, Path], tuple], *extra: object) -> Callable[[Path], Trial]:
    """The generation stage (``configs/generate.yaml`` + demo) on the dataset ``bundle_setup(tmp, root)`` builds."""

    def setup(tmp: Path) -> Trial:
        root = _bundle_copy(tmp, "mgcc_us")
        args = bundle_setup(tmp, root)
        return Trial(_bundle_run(root, GENERATE, *args, *TINY_GENERATION, *extra), (tmp,))

    return setup


def _dataset_with_missing_images(tmp: Path, root: Path) -> tuple:
    data = _small_dataset(tmp, "mgcc_us", n=5)
    for image in (data / "images").iterdir():
        image.unlink()
    return ("--dataset_dir", data)


def _dataset_without_training_images(tmp: Path, root: Path) -> tuple:
    data = _small_dataset(tmp, "mgcc_us", n=5)
    lists = json.loads((data / "datalist.json").read_text())
    (data / "datalist.json").write_text(json.dumps({"validation": lists["validation"], "test": lists["test"]}))
    return ("--dataset_dir", data)


def _fine_dataset(tmp: Path, root: Path) -> tuple:
    return ("--dataset_dir", _small_dataset(tmp, "mgcc_us", n=5))


def _runs_is_a_file(tmp: Path, root: Path) -> tuple:
    (root / "runs").write_text("not a folder")
    return _fine_dataset(tmp, root)


GENERATION_CASES = [
    Case("mgcc_us-generate-images-missing", _generate(_dataset_with_missing_images),
         r"DataError: labeled image file not found: .*c0\.png", BundleRunError),
    Case("mgcc_us-generate-datalist-without-training-images", _generate(_dataset_without_training_images),
         r"DataError: the 'labeled' list of .*datalist\.json is missing or empty", BundleRunError),
    Case("mgcc_us-generate-zero-samples", _generate(_fine_dataset, "--num_samples", 0),
         r"ConfigValueError: num_samples must be a positive integer, got 0", BundleRunError),
    Case("mgcc_us-generate-output-not-writable", _generate(_runs_is_a_file),
         r"ConfigValueError: the output folder .*runs is a file, not a folder", BundleRunError),
]


BUNDLE_CASES = [
    case
    for bundle in BUNDLE_NAMES
    for declared in (LABEL_CLASSES.get(bundle, 2),)
    for case in (
        Case(f"{bundle}-run-name-outside-runs", _run_name_outside(bundle),
             r"RunNameError: run_name '\.\./\.\./escape' is not a plain folder name", BundleRunError),
        Case(f"{bundle}-inference-run-name-with-separator", _inference_run_name_outside(bundle),
             r"RunNameError: run_name 'a/b' is not a plain folder name", BundleRunError),
        Case(f"{bundle}-evaluate-size-contradicts-model", _evaluate_contradicts_model(bundle),
             r"SettingsMismatchError: .*(image_size: the model was trained with 128, this run sets 256"
             r"|roi_size: the model was trained with \[48, 48, 32\], this run sets \[112, 112, 80\])", BundleRunError),
        Case(f"{bundle}-inference-classes-contradict-model", _inference_contradicts_model(bundle),
             r"SettingsMismatchError: .*num_classes: the model was trained with 3, this run sets 2", BundleRunError),
        Case(f"{bundle}-constant-training-image", _degenerate_image(bundle, "constant"),
             r"DataError: labeled image has one constant intensity \(128 everywhere\).*c1\.", BundleRunError),
        Case(f"{bundle}-tiny-training-image", _degenerate_image(bundle, "tiny"),
             r"DataError: labeled image is 4 x 4.* smaller than 8 on a side.*c1\.", BundleRunError),
        Case(f"{bundle}-labels-hold-more-classes-than-declared", _more_classes_than_declared(bundle),
             rf"DataError: labeled label has values \[{declared}\] outside the declared classes 0\.\.{declared - 1}: .*c0\.",
             BundleRunError),
        Case(f"{bundle}-train-from-the-repository-root", _from_the_repository_root(bundle, "train.yaml"),
             rf"BundleFolderError: .* is not the {bundle} bundle folder .*cd bundles/{bundle}.*--bundle_root",
             BundleRunError),
        Case(f"{bundle}-inference-from-the-repository-root", _from_the_repository_root(bundle, "inference.yaml"),
             rf"BundleFolderError: .* is not the {bundle} bundle folder", BundleRunError),
        Case(f"{bundle}-models-folder-not-writable", _models_folder_is_a_file(bundle),
             r"ConfigValueError: the output folder .*models is a file, not a folder", BundleRunError),
    )
] + [
    Case("switch_us-image-size-100", _size_the_network_cannot_take("switch_us", ("--image_size", 100)),
         r"ConfigValueError: image_size = 100: the network needs sizes that are multiples of 16", BundleRunError),
    Case("switch_us-image-size-30", _size_the_network_cannot_take("switch_us", ("--image_size", 30)),
         r"ConfigValueError: image_size = 30: .*multiples of 16.*for example 16 or 32", BundleRunError),
    Case("crossmatch_3d-roi-size-not-multiple-of-16",
         _size_the_network_cannot_take("crossmatch_3d", ("--roi_size", "[48,48,30]")),
         r"ConfigValueError: roi_size = \[48, 48, 30\]: the network needs sizes that are multiples of 16", BundleRunError),
    Case("crossmatch_3d-acdc-image-size-100",
         _size_the_network_cannot_take("crossmatch_3d", ("--image_size", 100), ("configs/acdc.yaml",)),
         r"ConfigValueError: image_size = \[100, 100\]: .*multiples of 16", BundleRunError),
    Case("localcontrast_2d-image-size-100", _size_the_network_cannot_take("localcontrast_2d", ("--image_size", 100)),
         r"ConfigValueError: image_size = 100: the network needs sizes that are multiples of 32 .*for example 96 or 128",
         BundleRunError),
    Case("localcontrast_2d-image-size-16", _size_the_network_cannot_take("localcontrast_2d", ("--image_size", 16)),
         r"ConfigValueError: image_size = 16: .*multiples of 32 and at least 32 .*for example 32", BundleRunError),
]


LA_CASES = ["A0", "A1", "A2", "A3", "B0"]


def _la_source(root: Path, *, label: bool = True, seed: int = 0, cases: list[str] = LA_CASES) -> Path:
    """A UA-MT LA tree: ``<case>/mri_norm2.h5`` (6 x 5 x 4), ``train.list`` (all but the last) and ``test.list``."""
    rng = np.random.default_rng(seed)
    for case in cases:
        (root / case).mkdir(parents=True, exist_ok=True)
        with h5py.File(root / case / "mri_norm2.h5", "w") as handle:
            handle["image"] = rng.normal(size=(6, 5, 4)).astype(np.float32)
            if label:
                handle["label"] = (rng.random((6, 5, 4)) > 0.5).astype(np.uint8)
    (root / "train.list").write_text("\n".join(cases[:-1]) + "\n")
    (root / "test.list").write_text(cases[-1] + "\n")
    return root


def _acdc_source(root: Path, *, seed: int = 0) -> Path:
    """An SSL4MIS ACDC tree: volumes (Z, H, W) of 6 patients, patient 38 only as slices, a validation list."""
    rng = np.random.default_rng(seed)
    (root / "data" / "slices").mkdir(parents=True, exist_ok=True)
    for patient in (10, 38, 50, 99, 20, 21):
        for frame in (1, 12):
            image, label = rng.random((3, 6, 5)), rng.integers(0, 4, size=(3, 6, 5)).astype(np.uint8)
            stem = f"patient{patient:03d}_frame{frame:02d}"
            if patient == 38:
                for k in range(3):
                    with h5py.File(root / "data" / "slices" / f"{stem}_slice_{k + 1}.h5", "w") as handle:
                        handle["image"], handle["label"] = image[k], label[k]
            else:
                with h5py.File(root / "data" / f"{stem}.h5", "w") as handle:
                    handle["image"], handle["label"] = image, label
    (root / "val_volumes.txt").write_text("data/patient020_frame01.h5\ndata/patient021_frame01.h5\n")
    return root


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _grey(seed: int, shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=shape).astype(np.uint8)


def _mask(shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 3:8] = 255
    return mask


DDTI_STEMS = ["1_1", "2_1(1)", "2_1(2)", "3_1", "4_1", "5_1", "6_1", "7_1", "8_1", "9_1"]


def _ddti_source(root: Path, *, seed: int = 0) -> Path:
    """A DDTI tree: ``cropped/<stem>.png`` with ``mask/<stem>.gif``."""
    for i, stem in enumerate(DDTI_STEMS):
        _png(root / "cropped" / f"{stem}.png", _grey(seed * 100 + i))
        _png(root / "mask" / f"{stem}.gif", _mask())
    return root


def _switch_source(root: Path, prefix: str = "img", n: int = 9) -> Path:
    """A Switch tree: ``images/``, ``labels/`` and ``train.txt`` / ``val.txt`` / ``test.txt``."""
    names = [f"{prefix}{i}.png" for i in range(n)]
    for i, name in enumerate(names):
        _png(root / "images" / name, _grey(i))
        _png(root / "labels" / name, _mask())
    (root / "train.txt").write_text("\n".join(names[: n - 4]) + "\n")
    (root / "val.txt").write_text("\n".join(names[n - 4 : n - 2]) + "\n")
    (root / "test.txt").write_text("\n".join(names[n - 2 :]) + "\n")
    return root


def _prepared_la(tmp: Path, name: str = "out") -> Path:
    """A dataset prepared from a good LA source (what ``--overwrite`` may replace)."""
    out = tmp / name
    pdt.la(str(_la_source(tmp / "la_before", seed=7)), str(out), num_labeled=2)
    return out


# ---------------------------------------------------------------------------------------------
# prepare_data.py cases
# ---------------------------------------------------------------------------------------------


def _la_without_label(tmp: Path) -> Trial:
    src, out = _la_source(tmp / "LA", label=False), tmp / "out"
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2), (out,))


def _la_without_label_over_prepared(tmp: Path) -> Trial:
    out = _prepared_la(tmp)
    src = _la_source(tmp / "LA", label=False)
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2, overwrite=True), (out,))


def _la_without_label_cli(tmp: Path) -> Trial:
    src, out = _la_source(tmp / "LA", label=False), tmp / "out"
    return Trial(_cli(PREPARE_DATA, "la", "--source", src, "--output", out, "--num_labeled", 2), (out,))


def _la_one_label_missing_over_prepared(tmp: Path) -> Trial:
    out = _prepared_la(tmp)
    src = _la_source(tmp / "LA")
    with h5py.File(src / "A1" / "mri_norm2.h5", "r+") as handle:
        del handle["label"]
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2, overwrite=True), (out,))


def _overwrite_partial_output(tmp: Path) -> Trial:
    """The images and labels a failed run of the old tool left behind, without a datalist.json."""
    out = _prepared_la(tmp)
    (out / "datalist.json").unlink()
    src = _la_source(tmp / "LA")
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2, overwrite=True), (out,))


def _overwrite_user_folder(tmp: Path) -> Trial:
    out = tmp / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    src = _switch_source(tmp / "switch")
    return Trial(lambda: pdt.switch(str(src), str(out), labeled_ratio=0.4, overwrite=True), (out,))


def _overwrite_dataset_with_user_files(tmp: Path) -> Trial:
    out = _prepared_la(tmp)
    (out / "notes.txt").write_text("my notes")
    src = _la_source(tmp / "LA")
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2, overwrite=True), (out,))


def _overwrite_foreign_datalist(tmp: Path) -> Trial:
    out = tmp / "theirs"
    (out / "images").mkdir(parents=True)
    (out / "datalist.json").write_text(json.dumps({"training": [{"image": "images/a.nii.gz"}]}))
    src = _la_source(tmp / "LA")
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2, overwrite=True), (out,))


def _acdc_missing_image_over_prepared(tmp: Path) -> Trial:
    out = tmp / "out"
    pdt.acdc(str(_acdc_source(tmp / "acdc_before", seed=1)), str(out))
    src = _acdc_source(tmp / "ACDC", seed=2)  # new values: an old-style run replaced files before failing
    with h5py.File(src / "data" / "patient099_frame12.h5", "r+") as handle:
        del handle["image"]
    return Trial(lambda: pdt.acdc(str(src), str(out), overwrite=True), (out,))


def _acdc_missing_label(tmp: Path) -> Trial:
    src, out = _acdc_source(tmp / "ACDC"), tmp / "out"
    with h5py.File(src / "data" / "patient050_frame01.h5", "r+") as handle:
        del handle["label"]
    return Trial(lambda: pdt.acdc(str(src), str(out)), (out,))


def _acdc_slice_missing_label(tmp: Path) -> Trial:
    src, out = _acdc_source(tmp / "ACDC"), tmp / "out"
    with h5py.File(src / "data" / "slices" / "patient038_frame12_slice_2.h5", "r+") as handle:
        del handle["label"]
    return Trial(lambda: pdt.acdc(str(src), str(out)), (out,))


def _ddti_mask_size_over_prepared(tmp: Path) -> Trial:
    out = tmp / "out"
    datalist = json.loads(pdt.ddti(str(_ddti_source(tmp / "ddti_before", seed=1)), str(out)).read_text())
    src = _ddti_source(tmp / "DDTI", seed=2)  # new pixel values everywhere
    last = Path(datalist["test"][-1]["image"]).stem  # written last: an old-style run replaced the others first
    stem = next(s for s in DDTI_STEMS if s.replace("(", "_").replace(")", "") == last)
    _png(src / "mask" / f"{stem}.gif", _mask((17, 20)))
    return Trial(lambda: pdt.ddti(str(src), str(out), overwrite=True), (out,))


def _la_list_leaves_source(tmp: Path) -> Trial:
    src, out = _la_source(tmp / "LA"), tmp / "out"
    _la_source(tmp / "elsewhere", cases=["X0"])
    (src / "train.list").write_text("A0\nA1\n../elsewhere/X0\n")
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2), (out, tmp / "elsewhere"))


def _switch_list_leaves_images(tmp: Path) -> Trial:
    src, out = _switch_source(tmp / "switch"), tmp / "out"
    (src / "train.txt").write_text("img0.png\nimg1.png\n../labels/img2.png\nimg3.png\n")
    return Trial(lambda: pdt.switch(str(src), str(out), labeled_ratio=0.5), (out,))


def _la_list_not_text(tmp: Path) -> Trial:
    src, out = _la_source(tmp / "LA"), tmp / "out"
    (src / "test.list").write_bytes(b"\xff\xfe\x00B0\x00\x81\n")
    return Trial(lambda: pdt.la(str(src), str(out), num_labeled=2), (out,))


def _hc18_csv_not_text(tmp: Path) -> Trial:
    src, out = tmp / "HC18", tmp / "out"
    for i in range(4):
        _png(src / "training_set" / f"00{i}_HC.png", _grey(i))
        _png(src / "training_set" / f"00{i}_HC_Annotation.png", _mask())
    (src / "training_set_pixel_size_and_HC.csv").write_bytes(b"filename,pixel size(mm)\n\xff\xfe\x81,0.1\n")
    return Trial(lambda: pdt.hc18(str(src), str(out)), (out,))


def _msd_id_not_a_file_name(tmp: Path) -> Trial:
    root, out = tmp / "Task", tmp / "out"
    names = ["a", "b", "c", "d", "."]  # "..nii.gz": its id would be "."
    for name in names:
        for folder in ("imagesTr", "labelsTr"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            array = np.zeros((4, 4, 3), np.float32 if folder == "imagesTr" else np.uint8)
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / f"{name}.nii.gz")
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]
    (root / "dataset.json").write_text(
        json.dumps({"name": "T", "labels": {"0": "bg", "1": "fg"}, "training": training})
    )
    return Trial(lambda: pdt.nifti(str(out), msd=str(root / "dataset.json"), labeled_ratio=0.5), (out,))


LABEL_MISSING = r"mri_norm2\.h5: has no label but case A\d is in the labeled list"

CASES = [
    Case("la-h5-without-label", _la_without_label, LABEL_MISSING),
    Case("la-h5-without-label-over-prepared-dataset", _la_without_label_over_prepared, LABEL_MISSING),
    Case("la-h5-without-label-cli", _la_without_label_cli, LABEL_MISSING, CommandLineError),
    Case(
        "la-h5-one-label-missing-over-prepared-dataset",
        _la_one_label_missing_over_prepared,
        r"A1/mri_norm2\.h5: has no label but case A1 is in the labeled list",
    ),
    Case(
        "overwrite-partial-output-without-datalist",
        _overwrite_partial_output,
        r"out: output folder holds no datalist\.json.*not replaced",
    ),
    Case("overwrite-user-folder", _overwrite_user_folder, r"mine: output folder holds no datalist\.json"),
    Case(
        "overwrite-dataset-with-user-files",
        _overwrite_dataset_with_user_files,
        r"out: output folder holds files prepare_data\.py did not write \(notes\.txt\)",
    ),
    Case(
        "overwrite-foreign-datalist",
        _overwrite_foreign_datalist,
        r"theirs: output folder holds a datalist\.json that prepare_data\.py did not write",
    ),
    Case(
        "acdc-h5-missing-image-over-prepared-dataset",
        _acdc_missing_image_over_prepared,
        r"patient099_frame12\.h5: missing key\(s\) \['image'\]",
    ),
    Case(
        "acdc-h5-missing-label",
        _acdc_missing_label,
        r"patient050_frame01\.h5: has no label but case patient050 is in the labeled list",
    ),
    Case(
        "acdc-slice-missing-label",
        _acdc_slice_missing_label,
        r"patient038_frame12_slice_1\.h5: has no label but case patient038 is in the labeled list",
    ),
    Case(
        "ddti-mask-size-over-prepared-dataset",
        _ddti_mask_size_over_prepared,
        r"\.gif: mask size \(17, 20\) differs from image .*\.png size \(16, 20\)",
    ),
    Case(
        "la-list-leaves-the-source",
        _la_list_leaves_source,
        r"train\.list: lists '\.\./elsewhere/X0', which is not a case folder name",
    ),
    Case(
        "switch-list-leaves-the-images-folder",
        _switch_list_leaves_images,
        r"train\.txt: lists '\.\./labels/img2\.png', which is not inside .*images",
    ),
    Case("la-list-not-text", _la_list_not_text, r"test\.list: list file is not a text file"),
    Case("hc18-csv-not-text", _hc18_csv_not_text, r"pixel_size_and_HC\.csv: pixel size csv is not a text file"),
    Case("msd-id-not-a-file-name", _msd_id_not_a_file_name, r"cannot derive an output file name from '\.'"),
    *BUNDLE_CASES,
    *GENERATION_CASES,
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    trial = case.setup(tmp_path)
    before = {folder: _snapshot(folder) for folder in trial.watched}
    with pytest.raises(case.raises) as info:
        trial.run()
    message = str(info.value)
    assert re.search(case.error, message), message
    assert 1 <= len(message.splitlines()) <= 3, message
    for folder in trial.watched:
        assert _snapshot(folder) == before[folder], f"{folder} changed"
        leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(f"{folder.name}.")]
        assert not leftovers, leftovers


# ---------------------------------------------------------------------------------------------
# what --overwrite leaves when it succeeds
# ---------------------------------------------------------------------------------------------


def test_overwrite_replaces_the_prepared_dataset_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pdt.switch(str(_switch_source(tmp_path / "first", prefix="old")), str(out), labeled_ratio=0.4)
    assert len(list((out / "images").iterdir())) == 9
    path = pdt.switch(
        str(_switch_source(tmp_path / "second", prefix="new", n=6)), str(out), labeled_ratio=0.5, overwrite=True
    )
    datalist = json.loads(path.read_text())
    images = {entry["image"] for key in pdt.LIST_KEYS for entry in datalist[key]}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {p for p in on_disk if p.startswith("images/")} == images and len(images) == 6
    assert all(p.startswith(("images/new", "labels/new")) for p in on_disk - {"datalist.json"}), on_disk  # none stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "out", "second"]  # no temporary folder left


# ---------------------------------------------------------------------------------------------
# inputs the bundles take rather than refuse: each row checks they are taken correctly
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    """A row of the second table: ``check(tmp)`` gives a bundle the input and asserts the outcome."""

    id: str
    check: Callable[[Path], None]


def _bundle_python(root: Path, code: str) -> dict:
    """Run ``code`` (which prints one JSON object last) with the bundle copy ``root`` as working folder."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


_PIPELINE_STATS = """
import json, sys
from monai.bundle import ConfigParser
configs, keys, overrides = {configs!r}, {keys!r}, {overrides!r}
parser = ConfigParser()
parser.read_config(configs)
parser.update(overrides)
sys.path.insert(0, ".")
out = {{}}
for key in keys:
    item = parser.get_parsed_content(key)(dict({item!r}))
    image = item["image"].float()
    out[key] = [float(image.min()), float(image.max()), float(image.mean()), float(image.std())]
print(json.dumps(out))
"""


def _sixteen_bit_png(tmp: Path) -> None:
    """A 16-bit PNG (values up to 4095, as many ultrasound and X-ray exports) is scaled, not clipped white."""
    root = _bundle_copy(tmp, "switch_us")
    values = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp / "u16.png")
    Image.fromarray((values > 2000).astype(np.uint8)).save(tmp / "u16_label.png")
    item = {"image": str(tmp / "u16.png"), "label": str(tmp / "u16_label.png")}
    for configs, keys in ((["configs/train.yaml"], ["validate#preprocessing"]), (["configs/inference.yaml"], ["preprocessing"])):
        stats = _bundle_python(root, _PIPELINE_STATS.format(configs=configs, keys=keys, overrides={"image_size": 64}, item=item))
        for key in keys:
            low, high, mean, _ = stats[key]
            assert low == 0.0 and high <= 4095 / 65535 + 1e-4 and 0.02 < mean < 0.04, (configs, key, stats[key])


def _volume_in_hounsfield_units(tmp: Path) -> None:
    """A CT volume in Hounsfield units reaches the network z-scored (LA) or in [0, 1] (ACDC), in every pipeline."""
    root = _bundle_copy(tmp, "crossmatch_3d")
    rng = np.random.default_rng(0)
    volume = rng.normal(40.0, 400.0, (48, 48, 32)).astype(np.float32)  # HU-like: mean 40, SD 400
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp / "ct.nii.gz"))
    nib.save(nib.Nifti1Image((volume > 0).astype(np.uint8), np.eye(4)), str(tmp / "ct_label.nii.gz"))
    item = {"image": str(tmp / "ct.nii.gz"), "label": str(tmp / "ct_label.nii.gz")}
    la = _bundle_python(root, _PIPELINE_STATS.format(
        configs=["configs/train.yaml"], keys=["validate#preprocessing", "train#preprocessing"],
        overrides={"roi_size": [32, 32, 16]}, item=item))
    inference = _bundle_python(root, _PIPELINE_STATS.format(configs=["configs/inference.yaml"], keys=["preprocessing"],
                                                             overrides={}, item={"image": item["image"]}))
    for stats in (la["validate#preprocessing"], inference["preprocessing"]):
        assert abs(stats[2]) < 1e-3 and abs(stats[3] - 1.0) < 1e-3, stats
    assert abs(la["train#preprocessing"][2]) < 0.3 and 0.7 < la["train#preprocessing"][3] < 1.3  # a crop of it
    acdc = _bundle_python(root, _PIPELINE_STATS.format(configs=["configs/train.yaml", "configs/acdc.yaml"],
                                                        keys=["validate#preprocessing"], overrides={}, item=item))
    low, high, _, _ = acdc["validate#preprocessing"]
    assert low == 0.0 and high == 1.0, acdc


def _declared_class_no_label_holds(bundle: str) -> Callable[[Path], None]:
    """Three declared classes, labels holding only class 1: the data check names class 2 in a warning."""

    def check(tmp: Path) -> None:
        root = _bundle_copy(tmp, bundle)
        data = _small_dataset(tmp, bundle, classes=2)  # class 1 alone
        code = (
            "import json, logging\nfrom monai.bundle import ConfigParser\nlogging.basicConfig()\n"
            "p = ConfigParser()\np.read_config(['configs/train.yaml'])\n"
            f"p.update({{'dataset_dir': {str(data)!r}, 'num_classes': 3, 'class_names': ['background', 'lesion', 'cyst']}})\n"
            "lists = p.get_parsed_content('datalists')\nprint(json.dumps({'labeled': len(lists['labeled'])}))"
        )
        out = _bundle_python(root, code)
        assert out["labeled"] == 2
        assert re.search(r"declares 3 classes .*no label of .*datalist\.json holds class 2 \(cyst\)", out["stderr"]), out

    return check


def _ctrl_c(bundle: str) -> Callable[[Path], None]:
    """Ctrl-C (SIGINT) during training: one line that says where the checkpoint is and that the command resumes."""

    def check(tmp: Path) -> None:
        import os
        import signal
        import time

        root = _bundle_copy(tmp, bundle)
        data = _small_dataset(tmp, bundle, n=5 if bundle in NEEDS_UNLABELED else 3)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("SSL_BUNDLES_TRACEBACK", None)
        configs = ["configs/train.yaml", "configs/demo.yaml"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs), "--dataset_dir", str(data),
             "--run_name", "interrupted"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        marker = root / "runs" / "interrupted" / "RUNNING"
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # into the data check or the first iterations
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        expected = os.path.join(str(root / "runs" / "interrupted"), "models")
        assert last == (f"stopped (Ctrl-C): the run's checkpoint is in {expected}; the same command resumes it "
                        "(a finished evaluation or inference run is simply rerun)."), err[-3000:]

    return check


TRIAL_SCHEDULES = {
    "switch_us": ("--pretrain_iterations", 2, "--selftrain_iterations", 2, "--val_interval", 2),
    # the supervised step, the pseudo-labels of the unlabelled volume and one joint round
    "localcontrast_2d": ("--supervised_iterations", 2, "--round_iterations", 2, "--rounds", 1, "--val_interval", 2),
}
"""A few-iteration schedule per bundle, set on the command line (default: ``--max_iterations 2``)."""


def _trial_run_keeps_the_published_model(bundle: str) -> Callable[[Path], None]:
    """A few-iteration run (the schedule changed on the command line) leaves ``models/model.pt`` as it was."""

    def check(tmp: Path) -> None:
        import os

        import torch

        root = _bundle_copy(tmp, bundle)
        data = _small_dataset(tmp, bundle, n=5)
        (root / "models").mkdir()
        (root / "models" / "model.pt").write_bytes(b"the user's good model")
        schedule = TRIAL_SCHEDULES.get(bundle, ("--max_iterations", 2, "--val_interval", 2))
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(["configs/train.yaml", "configs/demo.yaml"]),
             "--dataset_dir", str(data), "--run_name", "trial", *map(str, schedule)],
            cwd=root, capture_output=True, text=True, timeout=600, env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (root / "models" / "model.pt").read_bytes() == b"the user's good model"
        assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt"]
        assert "models/model.pt is left as it is" in proc.stdout + proc.stderr
        record = torch.load(root / "runs" / "trial" / "models" / "model.pt", map_location="cpu", weights_only=False)
        assert record["settings"]["bundle"] == bundle and record["settings"]["num_classes"] == LABEL_CLASSES.get(bundle, 2)
        if bundle in NEEDS_UNLABELED:  # the 32 x 32 x 16 unlabelled volume went through a round of pseudo-labels
            assert len(list((root / "runs" / "trial" / "pseudo_labels" / "round_1").glob("c*.nii.gz"))) == 1

    return check


def _generation_on_images_of_mixed_sizes(tmp: Path) -> None:
    """Training images of different sizes: the generation stage resizes them and writes the synthetic list."""
    root = _bundle_copy(tmp, "mgcc_us")
    data = _small_dataset(tmp, "mgcc_us", n=5)
    Image.fromarray(np.random.default_rng(1).integers(1, 255, (48, 40)).astype(np.uint8)).save(data / "images" / "c0.png")
    Image.fromarray(np.pad(np.ones((24, 20), np.uint8), ((0, 24), (0, 20)))).save(data / "labels" / "c0.png")
    _bundle_run(root, GENERATE, "--dataset_dir", data, *TINY_GENERATION)()
    out = root / "runs" / "generate_demo"
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["synthetic"]) == 2 and all((out / item["image"]).is_file() for item in datalist["synthetic"])
    assert datalist["labeled"][0]["image"].endswith("c0.png")  # the dataset's own lists, unchanged
    assert json.loads((data / "datalist.json").read_text()).get("synthetic") is None  # the dataset is not modified
    assert (out / "generation_grid.png").is_file() and (out / "FINISHED").is_file()
    assert json.loads((out / "generation_distance.json").read_text())["frechet_distance"] >= 0.0


HANDLED = [
    Handled("mgcc_us-generation-on-images-of-mixed-sizes", _generation_on_images_of_mixed_sizes),
    *(Handled(f"{bundle}-trial-run-keeps-the-published-model", _trial_run_keeps_the_published_model(bundle))
      for bundle in BUNDLE_NAMES),
    Handled("switch_us-16-bit-png", _sixteen_bit_png),
    Handled("crossmatch_3d-volume-in-hounsfield-units", _volume_in_hounsfield_units),
    *(Handled(f"{bundle}-declared-class-that-no-label-holds", _declared_class_no_label_holds(bundle))
      for bundle in ("switch_us", "crossmatch_3d", "localcontrast_2d")),  # mgcc_us segments one class: num_classes is 2 by construction
    *(Handled(f"{bundle}-ctrl-c-during-training", _ctrl_c(bundle)) for bundle in BUNDLE_NAMES),
]


@pytest.mark.parametrize("case", HANDLED, ids=[case.id for case in HANDLED])
def test_handled_input(case: Handled, tmp_path: Path) -> None:
    case.check(tmp_path)
