"""The Trainer: configs, optimiser, exact resume, distributed training, validation and the CLI on CIFAR-10."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from impure import Purifier, PurifierConfig
from impure.cli import main as cli
from impure.training import TrainConfig, Trainer, load_config
from impure.training.batches import BatchPlan, augment
from impure.training.optim import build_optimizer, warmup_constant_cooldown, warmup_cosine

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.fixture(scope="module")
def data(shared_dir):
    cifar = shared_dir / "data" / "cifar10"
    models = shared_dir / "models"
    return {"train": str(cifar / "train_jpeg.npz"), "val": str(cifar / "test_dev.npz"),
            "r20": str(models / "cifar10_resnet20.safetensors"), "r56": str(models / "cifar10_resnet56.safetensors")}


def tiny_config(output_dir: Path, train: str, preset: str = "tiny", **sections) -> dict:
    """A few-step run of a tiny preset ("tiny", the ViT, or "tiny-conv") on a small slice of the data."""
    values = {
        "output_dir": str(output_dir), "model": {"preset": preset},
        "data": {"train": train, "train_limit": 256, "crop_padding": 2},
        "optim": {"steps": 6, "batch_size": 8, "grad_accum": 2, "warmup_steps": 2, "lr": 2e-3, "grad_clip": 1.0},
        "log": {"every": 2, "checkpoint_every": 0, "progress": False},
    }
    for name, settings in sections.items():
        merge = isinstance(settings, dict) and name != "model"
        values[name] = {**values.get(name, {}), **settings} if merge else settings
    return values


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model" / "model.safetensors"))


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ configs
def test_toml_and_yaml_configs_map_onto_dataclasses(tmp_path):
    (tmp_path / "run.toml").write_text(textwrap.dedent("""
        stage = "finetune"
        [model]
        preset = "tiny"
        overrides = { mask_mode = "token" }
        [data]
        train = "x.npz"
        [optim]
        steps = 50
        warmup_steps = 5
        betas = [0.9, 0.99]
        [[loss.features]]
        name = "r20"
        network = "cifar_resnet20"
        nodes = { "layer3" = 2 }
        [adversarial]
        classifiers = [{ network = "cifar_resnet20", weights = "r20.safetensors" }]
        attacks = [{ name = "PGD", eps = "8/255", alpha = "2/255", steps = 3 }]
    """))
    config = load_config(tmp_path / "run.toml", ["optim.lr=3e-4", "log.progress=false"])
    assert config.stage == "finetune" and config.model.overrides == {"mask_mode": "token"}
    assert config.optim.betas == (0.9, 0.99) and config.optim.steps == 50 and config.optim.lr == 3e-4
    assert config.loss.features[0].nodes == {"layer3": 2} and config.log.progress is False
    attack = config.adversarial.attacks[0]
    assert attack.name == "PGD" and attack.options == {"eps": 8 / 255, "alpha": 2 / 255, "steps": 3}
    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(tmp_path / "run.yaml") == config


def test_example_configs_are_valid():
    paths = sorted((ROOT / "configs").glob("*.toml"))
    assert {p.stem for p in paths} >= {"cifar10-s-cpu-pretrain", "cifar10-s-cpu-finetune", "paper-imagenet-pretrain",
                                       "paper-imagenet-finetune"}
    stages = {load_config(path).stage for path in paths}
    assert stages == {"pretrain", "finetune", "robust"}
    paper = load_config(ROOT / "configs" / "paper-imagenet-finetune.toml")
    assert paper.loss.features[0].nodes == {"features.38": 30.0, "features.51": 10.0, "classifier.1": 10.0}


@pytest.mark.parametrize("text, message", [
    ("[optim]\nstep = 3", r"unknown key\(s\) \['step'\] in config.optim; known keys: .*'steps'"),
    ("[optim]\nsteps = 'many'", r"config.optim.steps must be int, got 'many'"),
    ("[optim]\nsteps = true", r"config.optim.steps must be int"),
    ("[model]\npreset = 'tiny'\ninit = 'runs/x/model'", "set exactly one of model.preset"),
    ("stage = 'finetune'", "fine-tuning needs adversarial inputs"),
    ("stage = 'train'", "stage must be 'pretrain', 'finetune' or 'robust'"),
    ("[adversarial]\nattacks = [{ eps = 0.03 }]", r"must be a table with a `name`"),
    ("[optim]\nwarmup_steps = 5000", r"warmup_steps must be in \[0, steps=1000\]"),
])
def test_bad_configs_name_the_problem(tmp_path, text, message):
    base = "[data]\ntrain = 'x.npz'\n" if "[data]" not in text else ""
    if "[model]" not in text:
        base += "[model]\npreset = 'tiny'\n"
    (tmp_path / "bad.toml").write_text(text + "\n" + base)
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "bad.toml")


# ------------------------------------------------------------------------------------------------ pieces
def test_weight_decay_skips_norms_biases_tokens_and_the_skip_path():
    purifier = Purifier(PurifierConfig.preset("tiny", noisy_skip=True))
    optimizer = build_optimizer(purifier, 1e-3, 0.05)
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    for name, parameter in purifier.named_parameters():
        is_matrix = parameter.ndim > 1 and not name.endswith("token") and not name.startswith("skip_proj.")
        assert (id(parameter) in decayed) == is_matrix, name
    assert id(purifier.skip_proj.weight) not in decayed
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[1]["weight_decay"] == 0
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14, min_ratio=0.1)
    rates = []
    for _ in range(14):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == sorted(rates[:5]) and max(rates) == pytest.approx(1e-3)
    assert rates[4:] == sorted(rates[4:], reverse=True) and scheduler.get_last_lr()[0] == pytest.approx(1e-4)


def test_constant_schedule_holds_the_peak_then_cools_down_linearly():
    optimizer = build_optimizer(Purifier(PurifierConfig.preset("tiny")), 1e-3, 0.05)
    scheduler = warmup_constant_cooldown(optimizer, warmup_steps=2, total_steps=10, cooldown_steps=4, min_ratio=0.1)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] < rates[1] < rates[2] == rates[5] == pytest.approx(1e-3)
    assert rates[6:] == sorted(rates[6:], reverse=True) and rates[6] == pytest.approx(1e-3)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-4)


def test_batch_plan_splits_ranks_and_reshuffles_epochs():
    plans = [BatchPlan(100, 10, world_size=2, rank=r, seed=3) for r in range(2)]
    epoch0 = [i for step in range(5) for plan in plans for i in plan.indices(step)]
    assert sorted(epoch0) == list(range(100))  # both ranks together read each sample once per epoch
    assert plans[0].indices(5) != plans[0].indices(0) and plans[0].position(7) == (1, 2)
    assert BatchPlan(100, 10, 2, 0, seed=3).indices(6) == plans[0].indices(6)  # a pure function of the step
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchPlan(15, 8, world_size=2)


def test_augment_applies_one_transform_to_the_pair():
    adversarial, clean = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    out_adv, out_clean = augment((adversarial, clean), hflip=True, crop_padding=2,
                                 generator=torch.Generator().manual_seed(0))
    again = augment((adversarial, clean), hflip=True, crop_padding=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_adv, again[0]) and out_adv.shape == adversarial.shape
    # The same flip and shift on both: the difference moves with the images.
    delta, _ = augment((adversarial - clean, clean), hflip=True, crop_padding=2,
                       generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out_adv - out_clean, delta, atol=1e-6)
    flipped = augment((clean,), hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(1))[0]
    assert all(torch.equal(f, c) or torch.equal(f, c.flip(-1)) for f, c in zip(flipped, clean, strict=True))


def test_resized_crops_zoom_into_one_region_per_sample_the_same_for_the_pair():
    # A horizontal ramp (value = the pixel's x centre in [0, 1]) stays a ramp under a crop and a bilinear
    # resize: each output row is increasing, inside the image's range, and spans the crop's width fraction.
    size = 32
    ramp = ((torch.arange(size) + 0.5) / size).expand(8, 3, size, size).contiguous()
    noise = torch.rand(8, 3, size, size)
    generator = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    cropped, cropped_noise = augment((ramp, noise), hflip=False, crop_padding=0, crop_scale=(0.25, 0.5),
                                     generator=generator())
    rows = cropped[:, 0]
    assert cropped.shape == ramp.shape and bool((rows.diff(dim=-1) > 0).all())
    assert rows.min() >= 0 and rows.max() <= 1
    # Output pixel centres sample the crop at its own pixel centres: the row spans (size-1)/size of the crop.
    width = (rows[:, :, -1] - rows[:, :, 0]).mean(1) * size / (size - 1)
    narrowest, widest = (0.25 * 3 / 4) ** 0.5, (0.5 * 4 / 3) ** 0.5  # √(area · aspect)
    assert bool(((width > narrowest - 1e-6) & (width <= widest + 1e-6)).all())
    assert bool((rows.std(1) < 1e-5).all())  # every row of a sample: the same horizontal window
    assert len({round(w, 4) for w in width.tolist()}) == 8  # a crop of its own per sample
    # One transform for the pair (it is linear, so it commutes with differences), repeatable from the seed.
    difference, _ = augment((ramp - noise, noise), hflip=False, crop_padding=0, crop_scale=(0.25, 0.5),
                            generator=generator())
    assert torch.allclose(cropped - cropped_noise, difference, atol=1e-6)
    # (1, 1) is off: the images come back untouched.
    same = augment((noise,), hflip=False, crop_padding=0, crop_scale=[1.0, 1.0], generator=generator())[0]
    assert torch.equal(same, noise)
    with pytest.raises(ValueError, match="data.crop_scale"):
        TrainConfig.from_dict({"data": {"train": "x.npz", "crop_scale": [0.5, 1.2]}, "model": {"preset": "tiny"}})


# ------------------------------------------------------------------------------------------------ trainer
def test_training_applies_the_configured_resized_crops(tmp_path, data):
    short = {"steps": 2, "grad_accum": 1}
    plain = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "plain", data["train"], optim=short)))
    plain.fit()
    cropped = tiny_config(tmp_path / "crops", data["train"], optim=short, data={"crop_scale": [0.3, 0.3]})
    Trainer(TrainConfig.from_dict(cropped)).fit()
    assert json.loads((tmp_path / "crops" / "train_config.json").read_text())["data"]["crop_scale"] == [0.3, 0.3]
    environment = json.loads((tmp_path / "plain" / "environment.json").read_text())  # the hardware of the run
    assert environment["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["device"] == "cpu" and environment["cpu"]["threads"] >= 1
    first, second = weights(tmp_path / "plain"), weights(tmp_path / "crops")
    assert any(not torch.equal(first[k], second[k]) for k in first)  # same seed and batches, other inputs


@pytest.mark.parametrize("preset", ["tiny", "tiny-conv"])
def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path, data, preset):
    Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "a", data["train"], preset))).fit()
    first = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "b", data["train"], preset))).fit(stop_after=3)
    assert first["step"] == 3 and not first["finished"] and first["model_dir"] is None
    with pytest.raises(ValueError, match="pass resume=True"):  # never overwrite a run by accident
        Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "b", data["train"], preset))).fit()
    changed = tiny_config(tmp_path / "b", data["train"], preset, optim={"lr": 1e-3})
    with pytest.raises(ValueError, match=r"config changed in \['optim.lr'\]"):
        Trainer(TrainConfig.from_dict(changed)).fit(resume=True)
    second = Trainer(TrainConfig.from_dict(tiny_config(tmp_path / "b", data["train"], preset))).fit(resume=True)
    assert second["finished"] and second["step"] == 6
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    initial = Purifier(PurifierConfig.preset(preset)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # and training did change them
    assert [r["step"] for r in records(tmp_path / "b")] == [2, 3, 4, 6]
    assert not list((tmp_path / "b").glob(".*"))  # no temporary files left behind
    reloaded = Purifier.from_pretrained(str(tmp_path / "b" / "model"))
    assert reloaded.config == PurifierConfig.preset(preset)


def test_constant_schedule_run_extends_on_resume_exactly_with_ema(tmp_path, data):
    def config(folder: str, steps: int, cooldown: int = 0) -> TrainConfig:
        return TrainConfig.from_dict(tiny_config(tmp_path / folder, data["train"], optim={
            "steps": steps, "schedule": "constant", "cooldown_steps": cooldown, "warmup_steps": 1,
            "ema_decay": 0.5, "grad_accum": 1}))

    Trainer(config("whole", 7, cooldown=2)).fit()
    assert Trainer(config("extended", 4)).fit()["finished"]
    assert Trainer(config("extended", 7, cooldown=2)).fit(resume=True)["finished"]  # more steps, then cool down
    whole, extended = weights(tmp_path / "whole"), weights(tmp_path / "extended")
    assert all(torch.equal(whole[k], extended[k]) for k in whole)
    with pytest.raises(ValueError, match=r"config changed in \['optim.steps'\]"):  # its cool-down has begun
        Trainer(config("extended", 9, cooldown=2)).fit(resume=True)
    # The saved model is the EMA of the weights, not the last weights.
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(state["ema"][k], whole[k]) for k in whole)
    assert any(not torch.equal(state["model"][k], whole[k]) for k in whole)


def test_ema_warmup_lets_a_run_from_scratch_leave_its_random_start(tmp_path, data):
    """With optim.ema_warmup the EMA's decay starts near 0, so after a few steps the saved EMA is much nearer the
    trained weights than a constant-decay EMA, which still mostly holds the random initial weights."""
    def distance(warmup: bool) -> float:
        folder = tmp_path / f"warmup-{warmup}"
        Trainer(TrainConfig.from_dict(tiny_config(folder, data["train"], optim={
            "steps": 4, "warmup_steps": 1, "ema_decay": 0.998, "ema_warmup": warmup, "grad_accum": 1}))).fit()
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        return sum(float((state["ema"][k] - state["model"][k]).abs().sum()) for k in state["model"])

    assert distance(True) < 0.5 * distance(False)


def test_time_limit_stops_with_a_checkpoint_and_validation_reports(tmp_path, data):
    values = tiny_config(tmp_path, data["train"], data={"val": data["val"], "val_limit": 8},
                         validation={"classifier": {"network": "cifar_resnet20", "weights": data["r20"]},
                                     "attack": {"name": "FGSM", "eps": "8/255"}, "batch_size": 8},
                         optim={"steps": 3, "grad_accum": 1}, log={"val_every": 2})
    result = Trainer(TrainConfig.from_dict(values)).fit(time_limit=0)
    assert result["step"] == 1 and not result["finished"] and (tmp_path / "checkpoint.pt").is_file()
    trainer = Trainer(TrainConfig.from_dict(values))
    assert trainer.fit(resume=True)["finished"]
    validation = [r for r in trainer.history if "val/psnr" in r]
    assert [r["step"] for r in validation] == [2, 3]
    for record in validation:
        assert 0 < record["val/l1"] < 1 and 0 < record["val/psnr"] < 60
        assert 0 <= record["val/accuracy"] <= 1 and 0 <= record["val_adv/accuracy"] <= 1


def test_bf16_autocast_on_the_cpu_and_fp16_refused(tmp_path, data):
    values = tiny_config(tmp_path, data["train"], precision="bf16", optim={"steps": 2, "grad_accum": 1})
    result = Trainer(TrainConfig.from_dict(values)).fit()
    assert result["finished"] and torch.isfinite(torch.tensor(result["metrics"]["total"]))
    values = tiny_config(tmp_path / "fp16", data["train"], precision="fp16")
    with pytest.raises(ValueError, match="precision 'fp16' for training is not supported on cpu"):
        Trainer(TrainConfig.from_dict(values)).fit()


@pytest.mark.parametrize("preset", ["tiny", "tiny-conv"])
def test_two_process_gloo_training_ends_with_the_one_process_weights(tmp_path, data, preset):
    optim = {"steps": 4, "grad_accum": 1, "schedule": "constant"}
    crops = {"crop_scale": [0.5, 1.0]}  # resized crops too are drawn for the global batch
    values = tiny_config(tmp_path / "run", data["train"], preset, optim=optim, data=crops)
    (tmp_path / "config.json").write_text(json.dumps(values))
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        from impure.training import Trainer, load_config
        trainer = Trainer(load_config({str(tmp_path / "config.json")!r}))
        result = trainer.fit()
        rank = os.environ["RANK"]
        torch.save(trainer.purifier.state_dict(), {str(tmp_path)!r} + f"/rank{{rank}}.pt")
        with open({str(tmp_path)!r} + f"/rank{{rank}}.txt", "w") as out:
            out.write(f"history {{len(trainer.history)}} model {{result['model_dir']}}")
    """))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were averaged across processes
    initial = Purifier(PurifierConfig.preset(preset)).state_dict()
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)
    facts = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert facts[0].startswith("history 2 model ") and facts[1] == "history 0 model None", facts  # rank 0 writes
    assert [r["step"] for r in records(tmp_path / "run")] == [2, 4]
    assert all(torch.equal(rank0[k], v) for k, v in weights(tmp_path / "run").items())
    # One process with the same global batch (2 x 8) draws the same noise, partitions and augmentation
    # for every sample, so it ends with the same weights. It runs on one thread like each rank: the thread
    # count changes the order of float reductions (by ~1e-5 here), which is not what this test is about.
    single = tiny_config(tmp_path / "single", data["train"], preset, optim={**optim, "batch_size": 16}, data=crops)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(TrainConfig.from_dict(single)).fit()
    finally:
        torch.set_num_threads(threads)
    alone = weights(tmp_path / "single")
    assert max(float((alone[k] - rank0[k]).abs().max()) for k in alone) < 1e-5
    # and resumes a two-process checkpoint with the same global batch (the other way is refused).
    (tmp_path / "run" / "model").rename(tmp_path / "run" / "model-2proc")
    resumed = tiny_config(tmp_path / "run", data["train"], preset, optim={**optim, "steps": 5, "batch_size": 16},
                          data=crops)
    assert Trainer(TrainConfig.from_dict(resumed)).fit(resume=True)["step"] == 5
    wrong = tiny_config(tmp_path / "run", data["train"], preset, optim={**optim, "steps": 6}, data=crops)
    with pytest.raises(ValueError, match="same global batch of 16 images"):
        Trainer(TrainConfig.from_dict(wrong)).fit(resume=True)


# ------------------------------------------------------------------------------------------------ the CLI
def _window_loss(folder: Path, first: bool) -> float:
    train = [r["total"] for r in records(folder) if "total" in r]
    return train[0] if first else train[-1]


def test_cli_runs_both_stages_on_cifar10_and_lowers_the_loss(tmp_path, data, capsys):
    pretrain = tiny_config(tmp_path / "pre", data["train"], data={"train_limit": 0},
                           optim={"steps": 30, "batch_size": 16, "grad_accum": 1, "warmup_steps": 3,
                                  "lr": 3e-3}, log={"every": 5})
    (tmp_path / "pre.json").write_text(json.dumps(pretrain))
    assert cli(["train", str(tmp_path / "pre.json")]) == 0
    assert _window_loss(tmp_path / "pre", first=False) < 0.9 * _window_loss(tmp_path / "pre", first=True)

    # Adversarial examples against ResNet-20, written in two shards; a resumed job rewrites a lost shard
    # exactly as before.
    shards = tmp_path / "adv"
    make = ["make-adversarial", data["train"], "-o", str(shards), "--classifier", "cifar_resnet20",
            "--classifier-weights", data["r20"], "--attack", "PGD", "--eps", "8/255", "--alpha", "2/255",
            "--steps", "2",
            "--limit", "96", "--shard-size", "64", "--batch-size", "32", "--device", "cpu"]
    assert cli(make) == 0
    original = (shards / "shard-00001-adversarial.npy").read_bytes()
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["shards"] == ["shard-00000", "shard-00001"] and manifest["complete"]
    (shards / "shard-00001-adversarial.npy").unlink()
    (shards / "manifest.json").write_text(json.dumps({**manifest, "shards": manifest["shards"][:1],
                                                      "complete": False}))
    assert cli(make) == 0
    assert (shards / "shard-00001-adversarial.npy").read_bytes() == original
    assert cli([*make[:-2], "--device", "cpu", "--seed", "1"]) == 1  # other settings: refused, not overwritten
    assert "other settings" in capsys.readouterr().err

    finetune = tiny_config(tmp_path / "fine", "", stage="finetune", model={"init": str(tmp_path / "pre" / "model")},
                           adversarial={"shards": [str(shards)]},
                           loss={"features": [{"name": "r20", "network": "cifar_resnet20", "weights": data["r20"],
                                               "nodes": {"layer1.2.relu_1": 1.0, "layer2.2.relu_1": 1.0}}]},
                           optim={"steps": 24, "batch_size": 16, "grad_accum": 1, "warmup_steps": 2, "lr": 2e-3},
                           data={"train_limit": 0}, log={"every": 4})
    (tmp_path / "fine.json").write_text(json.dumps(finetune))
    assert cli(["train", str(tmp_path / "fine.json")]) == 0
    log = [r for r in records(tmp_path / "fine") if "total" in r]
    assert {"pixel", "feature/r20/layer1.2.relu_1", "feature/r20/layer2.2.relu_1", "images_per_s"} <= log[0].keys()
    assert log[-1]["total"] < log[0]["total"]
    assert (tmp_path / "fine" / "model" / "model.safetensors").is_file()
    card = (tmp_path / "fine" / "model" / "README.md").read_text()  # the model card states the recipe
    assert "## Training" in card and "- `stage`: finetune" in card and "steps = 24, batch_size = 16" in card


@pytest.mark.parametrize("preset", ["tiny", "tiny-conv"])
def test_finetune_attacks_on_the_fly(tmp_path, data, preset):
    """The campaign's recipe in a few steps, on either backbone: attacks on the fly, pixel and feature loss on
    patch-mixed images, classifier guidance."""
    features = [{"name": "r20", "network": "cifar_resnet20", "weights": data["r20"], "nodes": {"layer1.2.relu_1": 1.0}}]
    values = tiny_config(tmp_path, data["train"], preset, stage="finetune",
                         adversarial={"classifiers": [{"network": "cifar_resnet20", "weights": data["r20"]}],
                                      "attacks": [{"name": "FGSM", "eps": "8/255"},
                                                  {"name": "PGD", "eps": "8/255", "alpha": "2/255", "steps": 1}]},
                         loss={"classifier": {"network": "cifar_resnet20", "weights": data["r20"]},
                               "classifier_weight": 0.1, "mixing": True, "features": features},
                         optim={"steps": 2})
    trainer = Trainer(TrainConfig.from_dict(values))
    result = trainer.fit()
    logged = {"pixel", "classifier", "feature/r20/layer1.2.relu_1", "total"}
    assert result["finished"] and logged <= result["metrics"].keys()
    assert Purifier.from_pretrained(result["model_dir"]).config.backbone == PurifierConfig.preset(preset).backbone
    bad = tiny_config(tmp_path / "bad", data["train"], stage="finetune",
                      adversarial={"classifiers": [{"network": "cifar_resnet20", "weights": data["r20"]}],
                                   "attacks": [{"name": "Nope"}]})
    with pytest.raises(ValueError, match=r"unknown attack 'Nope'; choose from fgsm, .*pgd"):
        Trainer(TrainConfig.from_dict(bad)).fit()


# ------------------------------------------------------------------------------------------------ robust stage
def _robust_values(tmp_path, data, steps=30, **robust):
    return tiny_config(tmp_path, data["train"], stage="robust", data={"train_limit": 64},
                       optim={"steps": steps, "batch_size": 8, "grad_accum": 1, "lr": 3e-3, "warmup_steps": 1},
                       robust={"classifiers": [{"network": "cifar_resnet20", "weights": data["r20"]}],
                               "attack": {"name": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 2}, **robust})


def _adaptive_loss(trainer, purifier, classifier, images, labels) -> float:
    """Cross-entropy of the classifier on purified PGD examples made through the pipeline (eval mode)."""
    torch.manual_seed(0)
    adversarial = trainer.robust_attack(purifier, classifier)(images, labels)
    with torch.no_grad():
        purifier.eval()
        logits = classifier(purifier(adversarial, generator=torch.Generator().manual_seed(0)))
    return float(torch.nn.functional.cross_entropy(logits, labels))


def test_robust_stage_lowers_the_adaptive_loss_with_a_frozen_classifier(tmp_path, data, monkeypatch):
    from impure.classifiers import load_classifier
    from impure.data import fetch_batch, open_dataset
    from impure.training import trainer as trainer_module

    classifier = load_classifier("cifar_resnet20", data["r20"]).eval()
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    monkeypatch.setattr(trainer_module, "load_logits_classifier", lambda spec, where, size: classifier)
    trainer = Trainer(TrainConfig.from_dict(_robust_values(tmp_path, data)))
    images, labels = fetch_batch(open_dataset(data["train"]), list(range(16)))  # seen in training
    torch.manual_seed(0)
    initial = Purifier(PurifierConfig.preset("tiny"))
    before = _adaptive_loss(trainer, initial, classifier, images, labels)
    result = trainer.fit()
    after = _adaptive_loss(trainer, trainer.purifier, classifier, images, labels)
    assert result["finished"] and after < before
    logged = [r for r in trainer.history if "robust_ce" in r]
    assert logged and all(r["total"] > r["robust_ce"] > 0 for r in logged)
    assert all(p.grad is None for p in classifier.parameters())  # no gradient reached the classifier
    # The attack differentiates the purifier being trained, not a copy: its weights are the current ones.
    attack = trainer.robust_attack(trainer.purifier, classifier)
    assert attack.model.purifier is trainer.purifier


def test_white_box_validation_attacks_through_the_current_purifier(tmp_path, data):
    values = _robust_values(tmp_path, data, steps=1)  # from a trained purifier: accuracy worth attacking
    values["model"] = {"init": "impure/cifar10"}
    values["optim"].update(lr=1e-5, warmup_steps=0)
    values["data"].update(val=data["val"], val_limit=24)
    values["validation"] = {"classifier": {"network": "cifar_resnet20", "weights": data["r20"]},
                            "attack": {"name": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 3},
                            "white_box_limit": 16}
    trainer = Trainer(TrainConfig.from_dict(values))
    trainer.fit()
    record = [r for r in trainer.history if "val_white/accuracy" in r][-1]
    # White-box (through the purifier) cannot beat clean accuracy, and it is the current weights' number.
    assert record["val_white/accuracy"] < record["val/accuracy"]
    val_sets = trainer._validation_set(torch.device("cpu"))
    again = trainer._white_box_accuracy(trainer.purifier, *val_sets["val"][1:], limit=16)
    assert again == record["val_white/accuracy"]
    values["validation"]["attack"] = None
    with pytest.raises(ValueError, match="white_box_limit must be >= 0 and needs validation.attack"):
        TrainConfig.from_dict(values)


def test_robust_stage_config_errors_name_the_field(tmp_path, data):
    values = _robust_values(tmp_path, data)
    values["robust"]["classifiers"] = []
    with pytest.raises(ValueError, match="stage 'robust' needs robust.classifiers"):
        TrainConfig.from_dict(values)
    values = _robust_values(tmp_path, data)
    values["robust"]["classifiers"] = [{"network": "torch.nn:Identity"}]
    (tmp_path / "robust.json").write_text(json.dumps(values))
    config = load_config(tmp_path / "robust.json")  # plain data: reading it runs no classifier
    with pytest.raises(ValueError, match=r"robust.classifiers\[0\] \('torch.nn:Identity'\) returns \(2, 3, 32, 32\)"):
        Trainer(config)


def test_settings_added_since_a_checkpoint_take_their_defaults_in_every_section():
    from impure.training.trainer import _with_defaults

    defaults = TrainConfig().to_dict()
    saved = {"stage": "robust", "robust": {"ce_weight": 2.0, "attack": {"name": "fgsm", "eps": 0.01}}}
    merged = _with_defaults(saved, defaults)
    assert merged["robust"]["ce_weight"] == 2.0 and merged["robust"]["eot_samples"] == 1  # a field added later
    assert merged["robust"]["attack"] == {"name": "fgsm", "eps": 0.01}  # a free-form table is kept as saved
    assert merged["optim"] == defaults["optim"]


def test_tensorboard_scalars_beside_the_jsonl_log(tmp_path, data):
    pytest.importorskip("tensorboard", reason='TensorBoard logging needs the extra: pip install "impure[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = tiny_config(tmp_path, data["train"], data={"val": data["val"], "val_limit": 8},
                         log={"every": 2, "val_every": 3, "tensorboard": True})
    Trainer(TrainConfig.from_dict(values)).fit(stop_after=4)  # interrupted, then resumed
    Trainer(TrainConfig.from_dict(values)).fit(resume=True)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    logged = records(tmp_path)
    total = [(r["step"], r["total"]) for r in logged if "total" in r]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/total")] == total
    assert [e.step for e in events.Scalars("val/psnr")] == [r["step"] for r in logged if "val/psnr" in r]
    assert "train/lr" in events.Tags()["scalars"]
