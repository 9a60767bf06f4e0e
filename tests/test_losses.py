"""Training losses: pixel L1, feature L1 through frozen networks, LPIPS, the classifier term, the total.

No ImageNet weights can be downloaded here: feature tests use the shared CIFAR ResNet-20 (real weights),
torchvision models with random weights saved to a local file, and LPIPS with a random backbone.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from impure.classifiers import load_classifier
from impure.training.builders import build_feature_loss
from impure.training.config import FeatureSpec
from impure.training.losses import (
    PAPER_FEATURE_NODES,
    ClassifierLoss,
    FeatureLoss,
    LPIPSLoss,
    PixelL1,
    PurificationLoss,
    paper_feature_loss,
)


@pytest.fixture(scope="module")
def resnet20(shared_dir):
    return load_classifier("cifar_resnet20", shared_dir / "models" / "cifar10_resnet20.safetensors")


@pytest.fixture(scope="module")
def images(shared_dir):
    from impure.data import load_npz

    return load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")[0][:8]


def test_pixel_l1_in_normalised_and_pixel_space():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.1)
    std = (0.2, 0.4, 0.5)
    assert torch.isclose(PixelL1(std)(a, b), torch.tensor(0.1 * (5 + 2.5 + 2) / 3))
    assert torch.isclose(PixelL1(None)(a, b), torch.tensor(0.1))
    with pytest.raises(ValueError, match="3 positive values"):
        PixelL1((0.2, 0.0, 0.5))


def test_feature_loss_through_the_shared_resnet20(resnet20, images):
    loss = FeatureLoss(resnet20, {"layer2.2.relu_1": 1.0, "layer3.2.relu_1": 2.0})
    assert all(not p.requires_grad for p in resnet20.parameters())
    loss.train()
    assert not resnet20.training and not loss.extractor.training  # frozen networks stay in eval mode
    noisy = (images + 0.05 * torch.randn_like(images)).clamp(0, 1).requires_grad_(True)
    terms = loss(noisy, images)
    assert set(terms) == {"layer2.2.relu_1", "layer3.2.relu_1"}
    assert all(float(v.detach()) > 0 for v in terms.values())
    assert all(float(v) == 0 for v in loss(images, images).values())
    sum(terms.values()).backward()
    assert noisy.grad is not None and float(noisy.grad.abs().sum()) > 0
    assert all(p.grad is None for p in resnet20.parameters())
    with pytest.raises(ValueError, match=r"unknown feature node\(s\) \['features.38'\].*layer1"):
        FeatureLoss(resnet20, {"features.38": 1.0})


def test_paper_nodes_exist_in_torchvision_vgg19_bn():
    with torch.device("meta"):  # architecture only: no 550 MB of random weights
        vgg = torchvision.models.vgg19_bn()
    loss = FeatureLoss(vgg, PAPER_FEATURE_NODES, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert loss.weights == {"features.38": 30.0, "features.51": 10.0, "classifier.1": 10.0}
    # relu4_4 and relu5_4 (before the pools) and the fc6 ReLU, as the paper uses.
    assert isinstance(vgg.features[38], nn.ReLU) and isinstance(vgg.features[39], nn.MaxPool2d)
    assert isinstance(vgg.features[51], nn.ReLU) and isinstance(vgg.features[52], nn.MaxPool2d)
    assert isinstance(vgg.classifier[1], nn.ReLU)


def test_missing_imagenet_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"vgg19_bn-c79401a0.pth.*weights='path.pth'"):
        paper_feature_loss()
    with pytest.raises(FileNotFoundError, match="alexnet"):
        LPIPSLoss("alex", pretrained_backbone=True)
    with pytest.raises(FileNotFoundError, match="ImageNet weights of torchvision's squeezenet1_1"):
        build_feature_loss(FeatureSpec(network="torchvision:squeezenet1_1", nodes={"features.3.cat": 1.0}))


def test_torchvision_feature_network_from_a_local_weights_file(tmp_path, images):
    torch.manual_seed(0)
    network = torchvision.models.squeezenet1_1(weights=None)  # random weights stand in for ImageNet's
    torch.save(network.state_dict(), tmp_path / "squeeze.pth")
    spec = FeatureSpec(network="torchvision:squeezenet1_1", weights=str(tmp_path / "squeeze.pth"),
                       nodes={"features.3.cat": 1.0, "features.12.cat": 0.5})
    loss = build_feature_loss(spec)
    assert loss.normalize  # ImageNet statistics applied before a raw torchvision model
    direct = FeatureLoss(network, {"features.3.cat": 1.0}, mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225))
    flipped = images.flip(-1)
    assert torch.equal(loss(flipped, images)["features.3.cat"], direct(flipped, images)["features.3.cat"])


def test_lpips_with_a_random_backbone(images):
    lpips = LPIPSLoss("alex", pretrained_backbone=False)  # the ImageNet backbone cannot be downloaded here
    assert float(lpips(images, images)) == 0
    assert float(lpips(images.flip(-1), images)) > 0
    assert all(not p.requires_grad for p in lpips.parameters())


def test_classifier_loss_ce_and_kl(resnet20, images, shared_dir):
    from impure.data import load_npz

    labels = load_npz(shared_dir / "data" / "cifar10" / "test_dev.npz")[1][:8]
    ce = ClassifierLoss(resnet20, "ce")
    clean_ce = float(ce(images, images, labels))
    assert clean_ce < float(ce(torch.rand_like(images), images, labels))  # ResNet-20 knows these images
    kl = ClassifierLoss(resnet20, "kl")
    assert abs(float(kl(images, images, None))) < 1e-5
    assert float(kl(images.flip(-2), images, None)) > 0
    with pytest.raises(ValueError, match="needs labels"):
        ce(images, images, None)


def test_total_is_the_weighted_sum_and_mixing_gates_the_feature_gradient(resnet20, images):
    features = FeatureLoss(resnet20, {"layer1.2.relu_1": 3.0, "layer3.2.relu_1": 0.5})
    loss = PurificationLoss(PixelL1(), 1.0, {"r20": features}, mixing_patch_size=4)
    adversarial = (images + 8 / 255 * torch.randn_like(images).sign()).clamp(0, 1)
    purified = (images + 0.02 * torch.randn_like(images)).requires_grad_(True)
    terms = loss(purified, images, adversarial, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"pixel", "feature/r20/layer1.2.relu_1", "feature/r20/layer3.2.relu_1", "total"}
    expected = (terms["pixel"] + 3.0 * terms["feature/r20/layer1.2.relu_1"]
                + 0.5 * terms["feature/r20/layer3.2.relu_1"])
    assert torch.isclose(terms["total"], expected)

    # Without the pixel term, the gradient reaches the purified image only in its non-input patches.
    feature_only = PurificationLoss(None, features={"r20": features}, mixing_patch_size=4)
    terms = feature_only(purified, images, adversarial, generator=torch.Generator().manual_seed(1))
    terms["total"].backward()
    from impure.training.mixing import patch_mixing_mask

    mask = patch_mixing_mask(8, 32, 32, 4, generator=torch.Generator().manual_seed(1)).expand_as(images)
    assert float(purified.grad[mask].abs().max()) == 0 and float(purified.grad[~mask].abs().sum()) > 0
    with pytest.raises(ValueError, match="pass inputs="):
        feature_only(purified, images)
    with pytest.raises(ValueError, match="at least one term"):
        PurificationLoss(None)
