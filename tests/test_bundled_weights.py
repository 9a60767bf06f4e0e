"""The purifiers shipped in the package: load offline by name and purify as their model cards say."""

import json

import pytest
import torch

from impure import Purifier, PurifierConfig
from impure.classifiers import load_classifier
from impure.data import load_npz
from impure.hub import BUNDLED_ROOT, bundled_names
from impure.metrics import psnr

BUNDLED = ["impure/cifar10", "impure/cifar10-s"]
# impure/cifar10-s is the "cifar10-s" preset; impure/cifar10 grew from it by recipes/grow_purifier.py (6 / 3 blocks,
# then a pixel head: the "cifar10-pixel" preset) and trains with the narrower noise of campaign stretch 13.
PRESETS = {"impure/cifar10": ("cifar10-pixel", {"train_image_noise_t": (0, 199), "train_feature_noise_t": (0, 299)}),
           "impure/cifar10-s": ("cifar10-s", {})}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_purifier_loads_offline_in_eval_mode_with_the_preset_architecture(name, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert name in bundled_names()
    purifier = Purifier.from_pretrained(name)
    assert not purifier.training and purifier.dtype == torch.float32
    preset_name, overrides = PRESETS[name]
    preset = PurifierConfig.preset(preset_name, **overrides).to_dict()
    loaded = purifier.config.to_dict()
    noise = ("image_noise_t", "feature_noise_t")  # the export may make an evaluation strength nominal
    assert {k: v for k, v in loaded.items() if k not in noise} == {k: v for k, v in preset.items() if k not in noise}
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = purifier(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_purifier_reproduces_its_card(name, shared_dir):
    card = json.loads((BUNDLED_ROOT / name.removeprefix("impure/") / "card.json").read_text())
    images, labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")
    images, labels = images[:100], labels[:100]
    purifier = Purifier.from_pretrained(name)
    classifier = load_classifier("cifar_resnet56", shared_dir / "models" / "cifar10_resnet56.safetensors").eval()
    with torch.no_grad():
        purified = purifier(images, generator=torch.Generator().manual_seed(0))
        accuracy = (classifier(purified).argmax(1) == labels).float().mean().item()
    assert psnr(purified, images).mean().item() == pytest.approx(card["test_dev_first100_psnr_db"], abs=0.05)
    assert accuracy == pytest.approx(card["test_dev_first100_resnet56_accuracy"], abs=0.021)
    with torch.no_grad():  # and it is a purifier, not the identity: the output differs from its input
        assert (purified - images).abs().mean() > 1 / 255
