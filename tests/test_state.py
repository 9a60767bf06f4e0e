"""One strict state-dict loader behind every way weights are loaded: the same error everywhere."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from impure import Purifier, PurifierConfig
from impure._util.state import load_state_dict_strict, read_state_dict
from impure.classifiers import CifarResNet, load_weights
from impure.evaluation import resolve_classifier
from impure.training.builders import build_feature_loss
from impure.training.config import FeatureSpec
from impure.training.losses import paper_feature_loss


def _without_first_key(state: dict) -> tuple[dict, str]:
    key = next(iter(state))
    return {k: v for k, v in state.items() if k != key}, key


def test_read_state_dict_unwraps_training_files_and_names_bad_ones(tmp_path):
    state = {"w": torch.ones(2)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert torch.equal(read_state_dict(tmp_path / "wrapped.pth")["w"], state["w"])
    (tmp_path / "broken.safetensors").write_bytes(b"no")
    with pytest.raises(ValueError, match="cannot read .*broken.safetensors as a .safetensors file"):
        read_state_dict(tmp_path / "broken.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_state_dict(tmp_path / "list.pt")


def test_every_loader_names_the_missing_tensor(tmp_path):
    tiny = Purifier(PurifierConfig.preset("tiny"))
    tiny.save_pretrained(tmp_path / "purifier")
    state, key = _without_first_key(tiny.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "purifier" / "model.safetensors"))
    resnet = CifarResNet(blocks_per_stage=1).state_dict()
    save_file(_without_first_key(resnet)[0], str(tmp_path / "resnet.safetensors"))
    vgg_state, vgg_key = _without_first_key(torchvision.models.vgg11(weights=None).state_dict())
    torch.save(vgg_state, tmp_path / "vgg.pth")
    squeeze_state, squeeze_key = _without_first_key(torchvision.models.squeezenet1_1(weights=None).state_dict())
    torch.save({"model": squeeze_state}, tmp_path / "squeezenet.pth")

    loaders = [
        (lambda: Purifier.from_pretrained(tmp_path / "purifier"), key),
        (lambda: load_weights(CifarResNet(blocks_per_stage=1), tmp_path / "resnet.safetensors"), "conv1.weight"),
        (lambda: resolve_classifier("torchvision:squeezenet1_1", tmp_path / "squeezenet.pth"), squeeze_key),
        (lambda: build_feature_loss(FeatureSpec(network="torchvision:vgg11", weights=str(tmp_path / "vgg.pth"),
                                                nodes={"features.1": 1.0})), vgg_key),
        (lambda: paper_feature_loss(tmp_path / "vgg.pth"), "features"),
    ]
    for load, missing in loaders:
        with pytest.raises(ValueError, match=rf"do not fit \w+: missing keys: {missing}"):
            load()


def test_strict_loading_names_unexpected_and_mis_shaped_tensors():
    model = torch.nn.Linear(2, 3)
    bad = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3), "extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys: extra; shape mismatches: weight \(file \(3, 4\), "
                                         r"model \(3, 2\)\)"):
        load_state_dict_strict(model, bad, "bad.pt")
