"""Classifier zoo: the shared checkpoints reach their published accuracy; loading is strict and explains itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from impure.classifiers import (
    CifarResNet,
    SqueezeNetCaffe,
    cifar_resnet20,
    cifar_resnet56,
    list_classifiers,
    load_classifier,
    load_weights,
    squeezenet1_0_caffe,
)


def _images(path, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(path)
    images = torch.from_numpy(data["images"][:count]).permute(0, 3, 1, 2).float() / 255
    return images, torch.from_numpy(data["labels"][:count])


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(batch)])
    return (predictions == labels).float().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected"), [("cifar_resnet20", 0.910), ("cifar_resnet56", 0.940)])
def test_cifar_resnets_reach_published_accuracy(shared_dir, name, expected):
    depth = name.removeprefix("cifar_")
    model = load_classifier(name, shared_dir / f"models/cifar10_{depth}.safetensors")
    images, labels = _images(shared_dir / "data/cifar10/test_dev.npz")
    assert _accuracy(model, images, labels) == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_squeezenet_reaches_published_accuracy(shared_dir):
    model = squeezenet1_0_caffe(shared_dir / "models/imagenet_squeezenet1_0_caffe.safetensors")
    images, labels = _images(shared_dir / "data/imagenet/samples224_dev.npz")
    assert _accuracy(model, images, labels, batch=50) == pytest.approx(0.60, abs=1e-6)


def test_preprocessing_is_part_of_the_model(shared_dir):
    """Without the built-in normalisation the ResNet loses most of its accuracy: the module must apply it."""
    model = cifar_resnet20(shared_dir / "models/cifar10_resnet20.safetensors")
    images, labels = _images(shared_dir / "data/cifar10/test_dev.npz", 200)
    normalised = _accuracy(model, images, labels)
    model.mean.zero_()
    model.std.fill_(1.0)
    assert normalised > _accuracy(model, images, labels) + 0.2


def test_squeezenet_preprocessing_is_caffe_convention():
    model = SqueezeNetCaffe()
    images = torch.zeros(2, 3, 224, 224)
    images[:, 0] = 1.0  # pure red
    caffe = model.preprocess(images)
    assert caffe.shape == (2, 3, 227, 227)
    # Red is the last (BGR) channel, on a 0-255 scale, minus the Caffe means (104, 117, 123).
    assert torch.allclose(caffe[:, 2], torch.full((2, 227, 227), 255.0 - 123.0))
    assert torch.allclose(caffe[:, 0], torch.full((2, 227, 227), -104.0))


@pytest.mark.parametrize("name", list_classifiers())
def test_every_classifier_builds_and_returns_logits(name):
    model = load_classifier(name)
    size = 64 if "squeezenet" in name else 32
    logits = model(torch.rand(2, 3, size, size))
    classes = 1000 if "squeezenet" in name else 10
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()
    assert not model.training


def test_weights_round_trip(tmp_path):
    model = CifarResNet(blocks_per_stage=1)
    torch.nn.init.normal_(model.linear.weight)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = load_weights(CifarResNet(blocks_per_stage=1), path)
    images = torch.rand(3, 3, 32, 32)
    assert torch.equal(model.eval()(images), loaded.eval()(images))


def test_wrong_checkpoint_names_missing_keys(shared_dir):
    with pytest.raises(ValueError, match=r"missing keys: layer1\.3\.conv1\.weight, .*\(172 more\)"):
        cifar_resnet56(shared_dir / "models/cifar10_resnet20.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.3\."):
        cifar_resnet20(shared_dir / "models/cifar10_resnet56.safetensors")


def _load_small(path):
    return load_weights(CifarResNet(blocks_per_stage=1), path)


def test_shape_mismatch_and_bad_files_are_reported(tmp_path):
    state = CifarResNet(blocks_per_stage=1).state_dict()
    state["linear.weight"] = torch.zeros(100, 64)
    path = tmp_path / "wide.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"shape mismatches: linear\.weight \(file \(100, 64\), model \(10, 64\)\)"):
        _load_small(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read .*garbage.safetensors"):
        _load_small(garbage)
    with pytest.raises(FileNotFoundError, match="classifier weights not found"):
        _load_small(tmp_path / "absent.safetensors")


def test_unknown_classifier_name():
    with pytest.raises(ValueError, match=r"unknown classifier 'resnet9000'; choose one of cifar_resnet20"):
        load_classifier("resnet9000")


@pytest.mark.parametrize("name", ["impure/cifar10-resnet20", "impure/cifar10-resnet20-heldout"])
def test_bundled_classifiers_have_the_accuracy_their_cards_state(shared_dir, name):
    from impure.classifiers import bundled_classifier_card
    from impure.data import load_npz

    card = bundled_classifier_card(name)
    model = load_classifier(name)
    images, labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    assert abs(accuracy - card["test_dev_accuracy_fp16_weights"]) < 0.005
    assert accuracy > 0.75
    with pytest.raises(ValueError, match="takes no weights"):
        load_classifier(name, weights="x.safetensors")


def test_the_demo_classifiers_card_quotes_the_committed_measurement():
    """The numbers `impure demo` prints about its classifier come from a committed benchmark result."""
    import json
    from pathlib import Path

    from impure.classifiers import bundled_classifier_card
    from impure.demo import DEFAULT_CLASSIFIER

    measured = bundled_classifier_card(DEFAULT_CLASSIFIER)["through_purifier"]
    result = json.loads((Path(__file__).resolve().parents[1] / measured["source"]).read_text())
    rows = {row["classifier"]: row for row in result["rows"]}
    for name, quoted in measured["accuracy"].items():
        assert quoted["purified_adversarial"] == round(rows[name]["purified_adversarial"], 1)
        assert quoted["clean"] == round(rows[name]["clean"], 1)
    assert measured["images"] == f"test_dev {result['start']}-{result['start'] + result['images'] - 1}"
    with pytest.raises(ValueError, match="not a bundled trained classifier"):
        bundled_classifier_card("cifar_resnet56")
