"""The recipes that train the bundled weights, run on the CPU at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from impure import Purifier
from impure.training.checkpoint import load_checkpoint

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def train_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import train_gpu

    return train_gpu


def test_gpu_recipe_trains_the_campaign_recipe_from_memory_on_the_cpu(tmp_path, shared_dir, train_gpu):
    out = tmp_path / "gpu"
    argv = ["--out", str(out), "--device", "cpu", "--steps", "5", "--batch-size", "8", "--train-limit", "64",
            "--train", str(shared_dir / "data" / "cifar10" / "train_jpeg.npz"),
            "--set", "model.init=''", "--set", "model.preset=tiny", "--set", "data.val_limit=8",
            "--set", "log.val_every=0", "--set", "log.every=1"]
    assert train_gpu.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 5
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "total" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5] and all(r["classifier"] > 0 for r in steps)
    lrs = [r["lr"] for r in steps]
    assert lrs[-1] < max(lrs)  # the last fifth cools down
    state = load_checkpoint(out / "checkpoint.pt")
    saved = Purifier.from_pretrained(out / "model")  # the EMA weights
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in state["ema"].items())


def test_a_corrupt_checkpoint_says_how_to_continue(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="continue from the last committed weights"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="model.init to the bundled model"):
        load_checkpoint(tmp_path / "missing.pt")


def test_export_bakes_in_the_strength_and_the_training_noise_ranges(tmp_path, shared_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import export_purifier

    bundled = Path(__file__).resolve().parents[1] / "src" / "impure" / "weights" / "cifar10-s"
    out = tmp_path / "s8"
    nominal = Purifier.from_pretrained(bundled).config
    argv = [str(bundled), "--out", str(out), "--strength", "8", "--train-noise-t", "80,240,120,360"]
    assert export_purifier.main(argv) == 0
    exported = Purifier.from_pretrained(out).config
    assert exported.image_noise_t == 8 * nominal.image_noise_t
    assert exported.feature_noise_t == 8 * nominal.feature_noise_t
    assert exported.train_image_noise_t == (80, 240) and exported.train_feature_noise_t == (120, 360)
    card = json.loads((out / "card.json").read_text())
    assert card["train_noise_t"] == [80, 240, 120, 360]
    # the source is float16 already: its own float16-vs-float32 check carries over (not an infinite PSNR)
    source_card = json.loads((bundled / "card.json").read_text())
    assert card["float16_vs_float32_psnr_db"] == source_card["float16_vs_float32_psnr_db"]
    # the same timesteps asked for directly, from the exported folder (nominal 8x): strength 1 there
    again = tmp_path / "again"
    noise_t = f"{exported.image_noise_t},{exported.feature_noise_t}"
    assert export_purifier.main([str(out), "--out", str(again), "--noise-t", noise_t]) == 0
    assert Purifier.from_pretrained(again).config.image_noise_t == exported.image_noise_t
    (again / "card.json").unlink()  # float16 weights whose export check is unknown: refused with a message
    with pytest.raises(SystemExit, match="float32 checkpoint"):
        export_purifier.main([str(again), "--out", str(tmp_path / "no-card")])
    for bad in (["--train-noise-t", "80,240"], ["--noise-t", f"{exported.image_noise_t},1"],
                ["--strength", "2", "--noise-t", noise_t]):
        with pytest.raises(SystemExit):
            export_purifier.main([str(bundled), "--out", str(tmp_path / "bad"), *bad])


def test_grown_purifier_computes_what_its_source_does_and_then_trains(tmp_path, shared_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import grow_purifier

    bundled = Path(__file__).resolve().parents[1] / "src" / "impure" / "weights" / "cifar10-s"
    source = Purifier.from_pretrained(bundled).float().eval()
    out = tmp_path / "deep"
    depths = source.config.encoder_depth + 2, source.config.decoder_depth + 1
    argv = [str(bundled), "--out", str(out), "--encoder-depth", str(depths[0]), "--decoder-depth", str(depths[1])]
    assert grow_purifier.main(argv) == 0
    grown = Purifier.from_pretrained(out).eval()
    assert (grown.config.encoder_depth, grown.config.decoder_depth) == depths
    images = torch.rand(4, 3, 32, 32)
    assert grow_purifier.largest_difference(source, grown, images, seed=3) == 0.0
    # the source's last decoder block (hidden tokens only) is still the last; the new ones are identities
    last = source.config.decoder_depth - 1
    assert torch.equal(grown.decoder_blocks[-1].mlp.fc1.weight, source.decoder_blocks[last].mlp.fc1.weight)
    assert not grown.decoder_blocks[last].attn.proj.weight.any()
    # and they train: the new blocks' zeroed output layers receive gradients
    grown.train()(images).square().mean().backward()
    assert grown.encoder_blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert grown.decoder_blocks[last].attn.proj.weight.grad.abs().sum() > 0
    assert grow_purifier.main([*argv[:-4], "--encoder-depth", "1", "--decoder-depth", str(depths[1]),
                               "--force"]) == 1  # shrinking is refused
    assert grow_purifier.main(argv) == 1  # existing weights are kept without --force


def test_purifier_grown_with_the_noisy_skip_path_computes_what_its_source_does(tmp_path, shared_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import grow_purifier

    bundled = Path(__file__).resolve().parents[1] / "src" / "impure" / "weights" / "cifar10-s"
    source = Purifier.from_pretrained(bundled).float().eval()
    out = tmp_path / "skip"
    assert grow_purifier.main([str(bundled), "--out", str(out), "--noisy-skip"]) == 0
    grown = Purifier.from_pretrained(out).eval()
    assert grown.config.noisy_skip and grown.config.encoder_depth == source.config.encoder_depth
    images = torch.rand(4, 3, 32, 32)
    assert grow_purifier.largest_difference(source, grown, images, seed=3) == 0.0
    grown.train()(images).square().mean().backward()
    assert grown.skip_proj.weight.grad.abs().sum() > 0  # closed, but it trains open
    with pytest.raises(ValueError, match="already has"):
        grow_purifier.grow(grown, noisy_skip=True)
    # the old design's weights never load silently into the new one (and the reverse)
    with pytest.raises(Exception, match="skip_proj"):
        Purifier.from_pretrained(bundled, noisy_skip=True)


def test_purifier_grown_with_the_pixel_head_computes_what_its_source_does(tmp_path, shared_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    import grow_purifier

    bundled = Path(__file__).resolve().parents[1] / "src" / "impure" / "weights" / "cifar10-s"
    source = Purifier.from_pretrained(bundled).float().eval()
    out = tmp_path / "pixel"
    assert grow_purifier.main([str(bundled), "--out", str(out), "--pixel-head", "16"]) == 0
    grown = Purifier.from_pretrained(out).eval()
    assert grown.config.pixel_head_width == 16 and not source.config.pixel_head_width
    images = torch.rand(4, 3, 32, 32)
    assert grow_purifier.largest_difference(source, grown, images, seed=3) == 0.0
    grown.train()(images).square().mean().backward()
    assert grown.pixel_head.conv3.weight.grad.abs().sum() > 0  # closed, but it trains open
    assert grow_purifier.main([str(out), "--out", str(tmp_path / "twice"), "--pixel-head", "16"]) == 1
    # the old design's weights never load silently into the new one
    with pytest.raises(Exception, match="pixel_head"):
        Purifier.from_pretrained(bundled, pixel_head_width=16)


def test_cards_readme_and_docs_regenerate_unchanged_from_the_committed_results(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(RECIPES))
    import write_model_card

    assert write_model_card.main(["--check"]) == 0, capsys.readouterr().err
    generated = write_model_card.generate()
    first = next(iter(generated))
    monkeypatch.setattr(write_model_card, "generate", lambda: {**generated, first: generated[first] + "x"})
    assert write_model_card.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_the_card_writer_reads_the_campaign_from_its_records(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(RECIPES))
    import write_model_card as writer

    bundled = writer.bundled_record()
    assert bundled["folder"] == json.loads((writer.WEIGHTS / "cifar10" / "card.json").read_text())["source"]
    chain = [record["stretch"] for record in writer.since_replaced()]
    assert chain and chain[-1] == bundled["stretch"] and bundled["replaces"] not in chain
    folders = {path.relative_to(writer.CAMPAIGN).parts[0] for path in writer.selection_runs()}
    assert folders == {path.name for path in writer.CAMPAIGN.glob("selection-stretch*")}  # every folder counts
    # A new stretch is a new folder: its selection run's rows appear without a code change.
    campaign = tmp_path / "campaign-cifar10"
    campaign.mkdir()
    for path in writer.CAMPAIGN.glob("selection-stretch*"):
        (campaign / path.name).symlink_to(path, target_is_directory=True)
    newest = json.loads(writer.selection_runs()[0].read_text())
    for result, spec in zip(newest["results"][1:2], newest["defences"][1:2], strict=True):
        result["defence"] = spec["label"] = "stretch 99 t=80/120"
    newest["results"], newest["defences"] = newest["results"][:2], newest["defences"][:2]
    (campaign / "selection-stretch99").mkdir()
    (campaign / "selection-stretch99" / "frontier.json").write_text(json.dumps(newest))
    monkeypatch.setattr(writer, "CAMPAIGN", campaign)
    monkeypatch.setattr(writer, "RESULTS", tmp_path)
    rows = {row["defence"] for row in writer.campaign_selection()}
    assert "stretch 99 t=80/120" in rows
    # A stretch in the bundled lineage without a record is an error that says where the record goes.
    records = writer.candidate_records()
    del records[chain[0]]
    monkeypatch.setattr(writer, "candidate_records", lambda: records)
    with pytest.raises(ValueError, match="has no recipes/candidates/\\*/record.json"):
        writer.since_replaced()


def test_the_bundled_demo_classifier_regenerates_from_its_card(tmp_path, monkeypatch):
    """bundle_demo_classifier.py, given the stages' cards, weights and benchmark result that the bundled card
    records, writes the committed card.json and model card again, byte for byte."""
    import shutil

    monkeypatch.syspath_prepend(str(RECIPES))
    import bundle_demo_classifier

    root = RECIPES.parent
    bundled = root / "src" / "impure" / "weights" / "cifar10-resnet20-heldout"
    card = json.loads((bundled / "card.json").read_text())
    monkeypatch.chdir(tmp_path)  # the recorded paths are relative to the checkout
    for run, stage in zip(card["runs"], card["stages"], strict=True):
        Path(run).mkdir(parents=True)
        (Path(run) / "card.json").write_text(json.dumps(stage))
    shutil.copyfile(bundled / "model.safetensors", Path(card["runs"][-1]) / "model.safetensors")
    source = Path(card["through_purifier"]["source"])
    source.parent.mkdir(parents=True)
    shutil.copyfile(root / source, source)
    out = tmp_path / "bundle"
    assert bundle_demo_classifier.main([*card["runs"], "--out", str(out), "--name", card["name"], "--spectrum",
                                        str(source), "--compute", card["compute"]]) == 0
    for name in ("card.json", "README.md", "model.safetensors"):
        assert (out / name).read_bytes() == (bundled / name).read_bytes(), name
    with pytest.raises(SystemExit, match="no row for"):
        bundle_demo_classifier.main([*card["runs"], "--out", str(out), "--name", "impure/other", "--spectrum",
                                     str(source)])
    # Without the run folders, the bundled folder's card and weights stand in for them.
    shutil.rmtree("runs")
    again = tmp_path / "again"
    assert bundle_demo_classifier.main(["--from-card", str(bundled), "--out", str(again), "--name", card["name"],
                                        "--spectrum", str(source)]) == 0
    for name in ("card.json", "README.md", "model.safetensors"):
        assert (again / name).read_bytes() == (bundled / name).read_bytes(), name
    with pytest.raises(SystemExit):  # the run folders or --from-card, not both
        bundle_demo_classifier.main([*card["runs"], "--from-card", str(bundled), "--out", str(again), "--name",
                                     card["name"]])
