"""`PurifiedClassifier`: logits through the purifier, exact or BPDA gradients; device selection."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from impure import PurifiedClassifier, Purifier, PurifierConfig, select_device, select_dtype
from impure._util.bpda import straight_through


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


def _wrapped(gradient: str = "full") -> PurifiedClassifier:
    purifier = Purifier(PurifierConfig.preset("tiny", mask_mode="token")).eval()
    return PurifiedClassifier(purifier, _classifier(), gradient=gradient)


def test_logits_are_the_classifier_on_the_purified_images():
    model = _wrapped()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (3, 10)
        torch.testing.assert_close(logits, model.classify(model.purify(images)))
        assert not torch.allclose(logits, model.classify(images))


def test_full_gradient_flows_through_the_purifier():
    model = _wrapped("full")
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(images).sum().backward()
    purified = model.purify(images.detach().requires_grad_())
    assert purified.requires_grad
    assert model.purifier.decoder_pred.weight.grad is not None


def test_bpda_uses_an_identity_backward_through_the_purifier():
    model = _wrapped("bpda")
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = model(images)
    exact = PurifiedClassifier(model.purifier, model.classifier, gradient="full")
    with torch.no_grad():
        torch.testing.assert_close(logits, exact(images), atol=0, rtol=0)
    logits.sum().backward()
    # The gradient equals the classifier's gradient at the purified point, as if the purifier were identity.
    purified = model.purify(images).detach().requires_grad_()
    model.classify(purified).sum().backward()
    torch.testing.assert_close(images.grad, purified.grad)
    assert model.purifier.decoder_pred.weight.grad is None


def test_straight_through_is_exact_forward_and_identity_backward():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    transformed = torch.round(images.detach() * 3) / 3
    out = straight_through(images, transformed)
    assert torch.equal(out, transformed) and out.data_ptr() != transformed.data_ptr()
    out.mul_(2)  # the caller owns the output: in-place changes are allowed
    weights = torch.randn_like(images)
    (out * weights).sum().backward()
    assert torch.equal(images.grad, 2 * weights)
    with pytest.raises(ValueError, match="must keep the shape"):
        straight_through(images, transformed[:, :, :4])


def test_gradient_option_is_validated():
    with pytest.raises(ValueError, match="'full' or 'bpda'"):
        _wrapped("straight-through")


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_select_dtype():
    cpu = torch.device("cpu")
    assert select_dtype("auto", cpu) == torch.float32
    assert select_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="'fp16' for inference is not supported on cpu"):
        select_dtype("fp16", cpu)
    # The Trainer resolves its autocast dtype with the same function.
    assert select_dtype("auto", cpu, training=True) == torch.float32
    assert select_dtype("auto", torch.device("mps"), training=True) == torch.float32
    assert select_dtype("auto", torch.device("mps")) == torch.float16
    with pytest.raises(ValueError, match="'fp16' for training is not supported on mps"):
        select_dtype("fp16", torch.device("mps"), training=True)


def test_purifier_on_another_device_than_the_images_is_a_clear_error():
    purifier = Purifier(PurifierConfig.preset("tiny")).to("meta")  # any device but the images'

    with pytest.raises(ValueError, match="move one of them"):
        purifier(torch.rand(1, 3, 32, 32))


def test_wrapper_reports_the_classifier_mode_without_changing_modes():
    purifier = Purifier(PurifierConfig.preset("tiny")).train()
    classifier = _classifier().eval()
    model = PurifiedClassifier(purifier, classifier)
    assert not model.training and purifier.training and not classifier.training


def test_a_classifier_in_training_mode_is_warned_about_once():
    purifier = Purifier(PurifierConfig.preset("tiny", mask_mode="token")).eval()
    model = PurifiedClassifier(purifier, nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten()))
    with pytest.warns(UserWarning, match=r"training mode.*\.eval\(\)"):
        model(torch.rand(2, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.rand(2, 3, 32, 32))  # once only
        model.eval()(torch.rand(2, 3, 32, 32))
