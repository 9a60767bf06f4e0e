"""`impure.defences.load_defence`: one way from a name to a defence, with the strength / noise-timesteps rule
written once; and the old import paths of the modules that moved."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from impure import Purifier, PurifierConfig
from impure.defences import JPEG, BitDepthReduction, MedianFilter, check_strength_or_noise_t, load_defence


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    Purifier(PurifierConfig.preset("tiny")).save_pretrained(folder)
    return folder


def test_names_give_the_defence_in_eval_mode(tiny_folder):
    assert load_defence(None) is None and load_defence("none") is None and load_defence(" None ") is None
    assert isinstance(load_defence("JPEG60"), JPEG) and load_defence("jpeg60").quality == 60
    assert isinstance(load_defence("bits3"), BitDepthReduction) and isinstance(load_defence("median5"), MedianFilter)
    purifier = load_defence(tiny_folder)
    assert isinstance(purifier, Purifier) and not purifier.training
    assert purifier.noise_t == purifier.nominal_noise_t


def test_strength_and_noise_timesteps_reach_the_purifier(tiny_folder):
    nominal = load_defence(tiny_folder).nominal_noise_t
    halved = load_defence(tiny_folder, strength=0.5)
    assert halved.noise_t == (round(nominal[0] * 0.5), round(nominal[1] * 0.5))
    assert load_defence(str(tiny_folder), noise_t=(80, 120)).noise_t == (80, 120)
    assert next(load_defence(tiny_folder, dtype="bf16").parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(("spec", "kwargs", "message"), [
    ("impure/cifar10", {"strength": 2.0, "noise_t": (80, 120)}, "give strength or noise_t, not both"),
    ("jpeg75", {"strength": 2.0}, "jpeg75 is a baseline"),
    ("none", {"noise_t": (80, 120)}, "need a purifier"),
    (JPEG(75), {"strength": 2.0}, "call set_strength"),
    ("impure/cifar10", {"strength": 0}, "strength must be a positive number"),
    ("impure/cifar10", {"strength": float("nan")}, "strength must be a positive number"),
    ("impure/cifar10", {"noise_t": 80}, r"noise_t must be an \(image, feature\) pair"),
])  # fmt: skip
def test_refusals_name_the_problem(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_defence(spec, **kwargs)


def test_a_module_passes_through_and_an_odd_spec_is_refused():
    median = MedianFilter(3)
    assert load_defence(median) is median
    with pytest.raises(TypeError, match="got int"):
        load_defence(3)
    with pytest.raises(ValueError, match="give --strength or --noise-t, not both"):
        check_strength_or_noise_t(1.5, (80, 120), names=("--strength", "--noise-t"))


def test_a_missing_purifier_names_what_was_looked_for(tmp_path):
    with pytest.raises((OSError, ValueError), match="no-such-purifier"):
        load_defence(tmp_path / "no-such-purifier")


@pytest.mark.parametrize(("old", "new", "name"), [
    ("impure.baselines", "impure.defences.baselines", "JPEG"),
    ("impure.tiling", "impure.defences.tiling", "purify_tiled"),
    ("impure.losses", "impure.training.losses", "PurificationLoss"),
    ("impure.mixing", "impure.training.mixing", "mix_patches"),
])  # fmt: skip
def test_old_import_paths_still_work_with_a_warning(old, new, name):
    # A fresh interpreter: the warning comes once, when the old module first loads.
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            f"import warnings; warnings.simplefilter('ignore')\nimport {old}, {new}\n"
            f"assert {old}.{name} is {new}.{name}\nprint('same')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"warned: {old} moved to {new}" in out and out.rstrip().endswith("same")
    assert importlib.import_module(new).__all__
