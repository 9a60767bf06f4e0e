"""`impure evaluate` and `impure make-adversarial` past one process and one run: under torchrun (2 gloo processes on
the CPU) they write what one process writes, and an interrupted evaluation resumes from its per-batch partial
results to the same JSON. (`impure purify` under torchrun: tests/test_purify_cli.py.)"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from impure import Purifier, PurifierConfig
from impure.classifiers import cifar_resnet20
from impure.cli import main
from impure.cli.evaluate import PARTIAL
from impure.data import load_npz
from impure.evaluation import evaluate, runner

# Measured, not computed: they differ between any two runs, however many processes.
TIMINGS = {"seconds", "images_per_second", "classifier_images_per_second", "peak_memory_mb"}


def without_timings(report):
    if isinstance(report, dict):
        return {key: without_timings(value) for key, value in report.items() if key not in TIMINGS}
    if isinstance(report, list):
        return [without_timings(value) for value in report]
    return report


@pytest.fixture(scope="module")
def setup(shared_dir, tmp_path_factory):
    """A noise-mode purifier (stochastic: white-box attacks use EOT) and the evaluation's arguments."""
    folder = tmp_path_factory.mktemp("purifier")
    torch.manual_seed(3)
    Purifier(PurifierConfig.preset("tiny")).save_pretrained(folder)
    weights = shared_dir / "models" / "cifar10_resnet20.safetensors"
    argv = ["evaluate", "--classifier", str(weights), "--data", str(shared_dir / "data" / "cifar10" / "test_dev.npz"),
            "--purifier", str(folder), "--noise-t", "60/90", "--attacks", "fgsm,pgd", "--steps", "2",
            "--eot-samples", "2", "--limit", "20", "--batch-size", "6", "--seed", "5", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    return {"argv": argv, "weights": weights}


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "report"
    assert main([*setup["argv"], "-o", str(out)]) == 0
    assert not (out / PARTIAL).exists()  # removed once the reports are written
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_write_the_one_process_json(setup, one_process, tmp_path):
    out = tmp_path / "report"
    # 20 images in batches of 6: 4 batches, the last one short; rank 0 takes batches 0 and 2, rank 1 takes 1 and 3.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "impure",
               *setup["argv"], "-o", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    merged = json.loads((out / "result.json").read_text())
    assert merged["attacks"][-1]["threat"] == "white-box"
    assert merged["stochastic_defence"] and merged["eot_samples"] == 2
    assert without_timings(merged) == without_timings(one_process)
    assert merged["noise_t"] == [60, 90]


class Interrupted(RuntimeError):
    pass


def test_an_interrupted_run_resumes_to_the_same_json(setup, one_process, tmp_path, monkeypatch, capsys):
    """The classifier fails on its 40th call, part-way into the attacks; --resume then recomputes only what no
    partial result holds."""
    calls = {"count": 0, "fail_at": 40}

    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = cifar_resnet20(setup["weights"])

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            calls["count"] += 1
            if calls["count"] == calls["fail_at"]:
                raise Interrupted("the machine went away")
            return self.net(images)

    monkeypatch.setitem(sys.modules, "flaky_for_test", types.SimpleNamespace(build=Flaky))
    argv = [item if item != str(setup["weights"]) else "flaky_for_test:build" for item in setup["argv"]]
    out = tmp_path / "report"
    with pytest.raises(Interrupted):
        main([*argv, "-o", str(out)])
    assert "run the same command with --resume" in capsys.readouterr().err
    saved = {path.name for path in (out / PARTIAL).rglob("*.pt")}
    assert saved and not (out / "result.json").exists()
    calls.update(count=0, fail_at=-1)
    written, save = [], runner._PartialStore.save
    monkeypatch.setattr(runner._PartialStore, "save", lambda self, stage, index, record: (
        written.append(self._path(stage, index).name), save(self, stage, index, record)))
    assert main([*argv, "-o", str(out), "--resume"]) == 0
    assert written and not saved & set(written)  # what the first run finished is read, not made again
    assert len(saved) + len(written) == 4 * 5  # 4 batches x (clean + 2 attacks x 2 threat models)
    resumed = json.loads((out / "result.json").read_text())
    assert without_timings({**resumed, "classifier": None}) == without_timings({**one_process, "classifier": None})
    assert not (out / PARTIAL).exists()


def test_resume_needs_an_output_and_excludes_force(setup, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*setup["argv"], "-o", "x", "--resume", "--force"])
    assert caught.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main([*setup["argv"], "--resume"]) == 1
    assert "--resume continues from the partial-results folder in -o/--output DIR" in capsys.readouterr().err


def test_partial_results_are_reused_only_by_the_same_evaluation(setup, shared_dir, tmp_path):
    images, labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")
    run = functools.partial(evaluate, cifar_resnet20(setup["weights"]), (images[:12], labels[:12]), "jpeg75",
                            attacks=["fgsm"], batch_size=4, device="cpu", progress=False, partial_dir=tmp_path)
    first = run(seed=1)
    (folder,) = tmp_path.iterdir()
    records = sorted(folder.glob("*.pt"))
    assert len(records) == 3 * 3  # (clean, grey-box fgsm, white-box fgsm) x 3 batches
    run(seed=2)
    run(seed=1, eps=4 / 255)
    assert len(list(tmp_path.iterdir())) == 3  # other settings, other records
    records[4].unlink()
    again = run(seed=1)
    assert records[4].is_file() and again.attacks == [
        dataclasses.replace(entry, seconds=again.attacks[index].seconds) for index, entry in enumerate(first.attacks)]
    assert all(torch.equal(again.per_image[key], first.per_image[key]) for key in first.per_image)


@pytest.mark.slow
def test_make_adversarial_under_torchrun_writes_the_one_process_shards(setup, shared_dir, tmp_path):
    """Three shards over two processes (rank 0: shards 0 and 2, rank 1: shard 1): the same files, byte for byte,
    and one complete manifest; a lost shard is made again by a rerun with any number of processes."""
    make = ["make-adversarial", str(shared_dir / "data" / "cifar10" / "test_dev.npz"), "--classifier",
            str(setup["weights"]), "--attack", "PGD", "--eps", "8/255", "--steps", "2", "--limit", "40",
            "--shard-size", "16", "--batch-size", "8", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main([*make, "-o", str(tmp_path / "one")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "impure",
               *make, "-o", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    names = sorted(path.name for path in one.iterdir())
    assert len(names) == 3 * 3 + 1 and names == sorted(path.name for path in two.iterdir())
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in names)  # manifest included
    assert json.loads((two / "manifest.json").read_text())["complete"]
    (two / "shard-00001-clean.npy").unlink()  # lost: rank 1's shard
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and (two / "shard-00001-clean.npy").read_bytes() == (one / "shard-00001-clean.npy"
                                                                                     ).read_bytes()


def test_purified_images_beyond_the_memory_budget_are_made_again_with_the_same_noise(setup, shared_dir,
                                                                                      monkeypatch):
    images, labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")
    torch.manual_seed(4)
    purifier = Purifier(PurifierConfig.preset("tiny"))
    run = functools.partial(evaluate, cifar_resnet20(setup["weights"]), (images[:12], labels[:12]), purifier,
                            attacks=["fgsm"], threat="grey-box", batch_size=4, device="cpu", progress=False, seed=1)
    kept = run()
    monkeypatch.setattr(runner, "_KEPT_BYTES", 0)  # nothing kept: every P(x) is purified again
    again = run()
    assert again.attacks[0].residual_l2 == kept.attacks[0].residual_l2 > 0
    assert all(torch.equal(again.per_image[key], kept.per_image[key]) for key in kept.per_image)
