"""Behaviour of `Purifier`: presets, shapes, gradients, padding, randomness and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from impure import Purifier, PurifierConfig, list_presets
from impure.model.masking import lattice_group_ids
from impure.model.purifier import SKIP_GAIN


def tiny(**overrides) -> Purifier:
    return Purifier(PurifierConfig.preset("tiny", **overrides)).eval()


def build(backbone: str, **overrides) -> Purifier:
    """The tiny preset of a backbone ("vit" or "conv"), in eval mode."""
    return Purifier(PurifierConfig.preset("tiny" if backbone == "vit" else "tiny-conv", **overrides)).eval()


def vit_only(**fields) -> dict:
    """ViT-only config fields that are set (non-zero), to pass to the ViT and leave out of the conv backbone."""
    return {name: value for name, value in fields.items() if value}


def hidden_together(purifier: Purifier, side: int) -> torch.Tensor:
    """(side, side) pixel map of the unit the information mask hides at once: for the ViT a lattice patch group,
    for the conv backbone every patch on its own."""
    p = purifier.config.patch_size
    rows = side // p
    if purifier.config.backbone == "conv":
        unit = torch.arange(rows * rows).view(rows, rows)
    else:
        unit = lattice_group_ids(rows, rows, purifier.config.num_groups).view(rows, rows)
    return unit.repeat_interleave(p, 0).repeat_interleave(p, 1)


def open_pixel_head(purifier: Purifier) -> Purifier:
    """Give the pixel head's last convolution (zero at first) random weights, so that the head acts."""
    torch.nn.init.normal_(purifier.pixel_head.conv3.weight, std=0.1)
    return purifier


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_and_purifies(name):
    config = PurifierConfig.preset(name)
    purifier = Purifier(config).eval()
    side = config.image_size
    with torch.no_grad():
        out = purifier(torch.rand(1, 3, side, side))
    assert out.shape == (1, 3, side, side)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_paper_preset_has_the_paper_size():
    purifier = Purifier(PurifierConfig.preset("paper-vitb16"))
    trainable = sum(p.numel() for p in purifier.parameters())
    # The reference's 115,789,914 trainable parameters, less its mask token (unused in noise mode).
    assert trainable == 115_789_914 - 512


@pytest.mark.parametrize("backbone,mode,skip,pixel_head", [
    ("vit", "noise", False, 0), ("vit", "token", False, 0), ("vit", "noise", True, 0), ("vit", "noise", False, 8),
    ("vit", "token", False, 8), ("conv", "noise", False, 0), ("conv", "token", False, 0)])
@pytest.mark.parametrize("training", [False, True])
def test_every_parameter_receives_a_gradient(backbone, mode, skip, pixel_head, training):
    purifier = build(backbone, mask_mode=mode, **vit_only(noisy_skip=skip, pixel_head_width=pixel_head))
    purifier.train(training)
    if pixel_head:  # a closed head passes no gradient to its first layers, as any zero-initialised branch
        open_pixel_head(purifier)
    purifier(torch.rand(2, 3, 32, 32), clamp=False).square().mean().backward()
    missing = [name for name, p in purifier.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_input_gets_a_gradient():
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    tiny()(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_samples_are_purified_independently():
    purifier = tiny(mask_mode="token")
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        batched = purifier(images, clamp=False)
        single = torch.cat([purifier(images[i:i + 1], clamp=False) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_generator_makes_noise_reproducible_and_noise_replays():
    purifier = tiny()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        first = purifier(images, generator=torch.Generator().manual_seed(7))
        again = purifier(images, generator=torch.Generator().manual_seed(7))
        other = purifier(images, generator=torch.Generator().manual_seed(8))
        # The same draws replayed: image noise first, then the feature noise, which the purifier draws in
        # grouped order and takes in raster order when replayed.
        generator = torch.Generator().manual_seed(7)
        image_noise = torch.randn(2, 3, 32, 32, generator=generator)
        grouped = torch.randn(2, 64, 32, generator=generator)
        raster = grouped[:, purifier.layout(images, None).inverse[0]]
        replayed = purifier(images, image_noise=image_noise, feature_noise=raster)
        zero_noise = purifier(images, image_noise=torch.zeros(2, 3, 32, 32), feature_noise=torch.zeros(2, 64, 32))
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.testing.assert_close(replayed, first, atol=1e-6, rtol=0)
    assert not torch.allclose(zero_noise, first, atol=1e-3)  # the replayed noise is used


def test_token_mode_is_deterministic():
    purifier = tiny(mask_mode="token")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(purifier(images), purifier(images))


def test_training_mode_draws_random_partitions_and_windows():
    purifier = tiny(mask_mode="token").train()
    images = torch.rand(2, 3, 32, 32)
    layout = purifier.layout(images, torch.Generator().manual_seed(0))
    assert layout.order.shape == (2, 64)
    assert not torch.equal(layout.order[0], layout.order[1])
    assert all(torch.equal(layout.order[i].sort().values, torch.arange(64)) for i in range(2))
    with torch.no_grad():
        first = purifier(images, generator=torch.Generator().manual_seed(1))
        second = purifier(images, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(first, second)


def test_lattice_partition_interleaves_groups_and_uses_the_centred_window():
    purifier = tiny(mask_mode="token")
    images = torch.rand(2, 3, 32, 32)
    layout = purifier.layout(images, None)
    groups = torch.empty(64, dtype=torch.long)
    groups[layout.order[0]] = torch.arange(4).repeat_interleave(16)
    expected = torch.tensor([[0, 1] * 4, [2, 3] * 4] * 4).reshape(-1)
    assert torch.equal(groups, expected)
    # An 8 x 8 patch grid in the 16 x 16 position table: the window starts at row and column 4.
    rows, cols = layout.order[0] // 8, layout.order[0] % 8
    assert torch.equal(layout.positions[0], (rows + 4) * 16 + (cols + 4))
    assert layout.lattice2x2 and purifier.layout(images, None) is layout  # built once, then cached
    # The reshapes that group and ungroup the 2x2 lattice agree with the index tensors.
    gathered = dataclasses.replace(layout, lattice2x2=False)
    with torch.no_grad():
        normalized = (images - purifier.mean) / purifier.std
        assert torch.equal(purifier.embed(normalized, layout), purifier.embed(normalized, gathered))
        patches = torch.rand(2, 64, 48)
        assert torch.equal(purifier.unpatchify(patches, layout), purifier.unpatchify(patches, gathered))


@pytest.mark.parametrize("backbone,groups,pixel_head", [("vit", 2, 0), ("vit", 3, 0), ("vit", 4, 0), ("vit", 2, 8),
                                                     ("vit", 3, 8), ("vit", 4, 8), ("conv", None, 0)])
def test_information_mask_a_group_never_sees_its_own_pixels(backbone, groups, pixel_head):
    """Token mode without the output convolution, with and without the pixel head: the output pixels of the unit
    hidden at once (a ViT patch group; for the conv backbone, every single patch) have exactly zero gradient with
    respect to that unit's own input pixels, and a non-zero one with respect to the others'."""
    fields = vit_only(num_groups=groups, pixel_head_width=pixel_head)
    purifier = build(backbone, mask_mode="token", output_conv=False, **fields)
    if pixel_head:
        open_pixel_head(purifier)
    side = 24 if groups == 3 else 32  # a 6 x 6 grid splits into 3 lattice groups, an 8 x 8 one into 2 or 4
    images = torch.rand(1, 3, side, side, requires_grad=True)
    unit_of = hidden_together(purifier, side)
    output = purifier(images, clamp=False)
    for unit in range(int(unit_of.max()) + 1):
        own = unit_of == unit
        (grad,) = torch.autograd.grad(output[..., own].sum(), images, retain_graph=True)
        assert torch.count_nonzero(grad[..., own]) == 0
        assert grad[..., ~own].abs().sum() > 0


@pytest.mark.parametrize("backbone,skip,pixel_head", [("vit", False, 0), ("vit", True, 0), ("vit", False, 8),
                                                      ("conv", False, 0)])
def test_information_mask_in_noise_mode_a_group_sees_its_own_pixels_only_through_the_noisy_copy(
        backbone, skip, pixel_head):
    """Noise mode without the output convolution, with and without the noisy-pixel skip path or the pixel head:
    with the noisy copy cut from the graph, a hidden unit's output has exactly zero gradient with respect to its
    own pixels; through the noisy copy alone it has a non-zero one."""
    purifier = build(backbone, output_conv=False, **vit_only(noisy_skip=skip, pixel_head_width=pixel_head))
    if skip:  # open the path (it starts closed)
        torch.nn.init.normal_(purifier.skip_proj.weight, std=0.1)
    if pixel_head:
        open_pixel_head(purifier)
    noise_image = purifier.noise_image
    unit_of = hidden_together(purifier, 32)
    images = torch.rand(1, 3, 32, 32, requires_grad=True)

    def clean_path_only(normalized, noise, generator):
        return noise_image(normalized.detach(), noise, generator)

    def noisy_path_only(normalized, noise, generator):
        return noise_image((images - purifier.mean) / purifier.std, noise, generator)  # the same values

    for path, source in ((clean_path_only, images), (noisy_path_only, images.detach())):
        purifier.noise_image = path
        output = purifier(source, clamp=False, generator=torch.Generator().manual_seed(0))
        for unit in range(int(unit_of.max()) + 1):
            own = unit_of == unit
            (grad,) = torch.autograd.grad(output[..., own].sum(), images, retain_graph=True)
            if path is clean_path_only:
                assert torch.count_nonzero(grad[..., own]) == 0
                assert grad[..., ~own].abs().sum() > 0
            else:
                assert grad[..., own].abs().sum() > 0


def test_conv_backbone_with_the_copy_weight_at_zero_never_sees_a_patch_own_pixels():
    """The conv backbone in noise mode, its noisy copy's weight zeroed: no patch's output depends on its own input
    pixels at all, through either path, while it still depends on its neighbours'."""
    purifier = build("conv", output_conv=False)
    with torch.no_grad():
        purifier.blindspot.fuse_copy.weight.zero_()
    unit_of = hidden_together(purifier, 32)
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    output = purifier(images, clamp=False, generator=torch.Generator().manual_seed(0))
    for unit in range(int(unit_of.max()) + 1):
        own = unit_of == unit
        (grad,) = torch.autograd.grad(output[..., own].sum(), images, retain_graph=True)
        assert torch.count_nonzero(grad[..., own]) == 0
        assert grad[..., ~own].abs().sum() > 0


def test_conv_backbone_purifies_any_shape_reproducibly_and_replays_its_noise():
    """Square and non-square grids (the rotated branches take two shapes), samples independent of their batch,
    the generator's draws replayed through image_noise and feature_noise (N, L, conv_width) in raster order."""
    purifier = build("conv")
    images = torch.rand(3, 3, 24, 40)
    with torch.no_grad():
        batched = purifier(images, clamp=False, image_noise=torch.zeros_like(images),
                           feature_noise=torch.zeros(3, 60, 16))
        single = torch.cat([purifier(images[i:i + 1], clamp=False, image_noise=torch.zeros(1, 3, 24, 40),
                                     feature_noise=torch.zeros(1, 60, 16)) for i in range(3)])
        first = purifier(images, generator=torch.Generator().manual_seed(7))
        generator = torch.Generator().manual_seed(7)
        image_noise = torch.randn(3, 3, 24, 40, generator=generator)
        feature_noise = torch.randn(3, 16, 6, 10, generator=generator).flatten(2).transpose(1, 2)
        replayed = purifier(images, image_noise=image_noise, feature_noise=feature_noise)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(replayed, first, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"feature_noise must have shape \(3, 60, 16\)"):
        purifier(images, feature_noise=torch.zeros(3, 60, 32))


def test_noisy_skip_starts_closed_and_can_carry_the_image():
    """The skip path is zero at first (the output equals the same weights' without it), and opened to the
    identity with the decoder silenced it returns the image at almost no noise."""
    torch.manual_seed(0)
    plain = tiny(output_conv=False)
    skip = tiny(output_conv=False, noisy_skip=True)
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert (sorted(missing), unexpected) == (["skip_proj.bias", "skip_proj.weight"], [])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(skip(images, generator=torch.Generator().manual_seed(1)),
                                   plain(images, generator=torch.Generator().manual_seed(1)), atol=0, rtol=0)
        p = skip.config.patch_size
        identity = torch.eye(3 * p * p).view(3 * p * p, 3, p, p) / SKIP_GAIN
        skip.skip_proj.weight.copy_(identity)
        skip.decoder_pred.weight.zero_()
        skip.decoder_pred.bias.zero_()
        skip.set_strength(0.0001)  # image noise t 0: sqrt(1 - alpha_bar) = 0.01
        out = skip(images, generator=torch.Generator().manual_seed(1))
    psnr = -10 * torch.log10(F.mse_loss(out, images))
    assert psnr > 45


def test_pixel_head_starts_closed_corrects_hidden_pixels_from_their_neighbours_and_needs_its_own_weights():
    """A new pixel head changes nothing (the same weights without it give the same output, in training too);
    opened, it changes the output; and a state dict of the design without it does not load into it."""
    torch.manual_seed(0)
    plain, headed = tiny(), tiny(pixel_head_width=8)
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"pixel_head.conv{i}.{kind}" for i in (1, 2, 3) for kind in ("bias", "weight")]
    assert unexpected == []
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for training in (False, True):
            plain.train(training), headed.train(training)
            torch.testing.assert_close(headed(images, generator=torch.Generator().manual_seed(1)),
                                       plain(images, generator=torch.Generator().manual_seed(1)), atol=0, rtol=0)
        headed.eval()
        opened = open_pixel_head(headed)(images, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(opened, plain.eval()(images, generator=torch.Generator().manual_seed(1)), atol=1e-3)
    with pytest.raises(RuntimeError, match="pixel_head"):
        headed.load_state_dict(plain.state_dict())


def test_pixel_head_width_is_checked_and_has_its_preset():
    with pytest.raises(ValueError, match="PurifierConfig.pixel_head_width"):
        PurifierConfig.preset("tiny", pixel_head_width=-1)
    assert PurifierConfig.preset("cifar10-pixel").pixel_head_width > 0
    assert PurifierConfig.preset("paper-vitb16").pixel_head_width == 0


def test_random_partitions_at_evaluation_follow_the_generator():
    purifier = tiny(mask_mode="token", partition="random")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        first = purifier(images, generator=torch.Generator().manual_seed(0))
        again = purifier(images, generator=torch.Generator().manual_seed(0))
        other = purifier(images, generator=torch.Generator().manual_seed(1))
        lattice = tiny(mask_mode="token")
        lattice.load_state_dict(purifier.state_dict())
        fixed = lattice(images)
    assert torch.equal(first, again) and not torch.allclose(first, other, atol=1e-4)
    assert not torch.allclose(first, fixed, atol=1e-4)
    layout = purifier.layout(images, torch.Generator().manual_seed(0))
    assert layout.order.shape == (2, 64) and not layout.lattice2x2


def test_a_config_without_fusion_taps_uses_the_last_block_alone():
    purifier = tiny(mask_mode="token", fusion_taps=())
    assert len(purifier.fusion_proj) == 0
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = purifier(images)
        tokens = purifier.embed((images - purifier.mean) / purifier.std, purifier.layout(images, None))
        x = tokens.reshape(8, 16, -1)
        x = torch.cat([purifier.cls_token.expand(8, -1, -1), x], dim=1)
        for block in purifier.encoder_blocks:
            x = block(x)
        cls, features = purifier.encode(tokens)
    assert out.shape == images.shape and torch.isfinite(out).all()
    torch.testing.assert_close(features, purifier.encoder_norm(x)[:, 1:].reshape(2, 64, -1))


def test_clamp_option():
    purifier = tiny()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        raw = purifier(images, generator=torch.Generator().manual_seed(0), clamp=False)
        clamped = purifier(images, generator=torch.Generator().manual_seed(0))
    assert raw.min() < 0 or raw.max() > 1  # an untrained model overshoots
    assert torch.equal(clamped, raw.clamp(0, 1))


def test_sizes_off_the_patch_grid_are_padded_and_cropped():
    purifier = tiny(mask_mode="token", pad_mode="replicate")
    images = torch.rand(2, 3, 30, 27)
    with torch.no_grad():
        out = purifier(images, clamp=False)
        manual = purifier(F.pad(images, (0, 5, 0, 2), mode="replicate"), clamp=False)[..., :30, :27]
    assert out.shape == images.shape
    torch.testing.assert_close(out, manual, atol=1e-6, rtol=0)


def test_non_square_and_larger_inputs_use_a_window_of_the_position_table():
    purifier = tiny(mask_mode="token")
    with torch.no_grad():
        assert purifier(torch.rand(1, 3, 48, 64)).shape == (1, 3, 48, 64)


def test_too_large_input_names_the_largest_size():
    with pytest.raises(ValueError, match=r"64x64.*impure\.defences\.purify_tiled"):
        tiny()(torch.rand(1, 3, 65, 32))


@pytest.mark.parametrize(
    "images,error,match",
    [
        (torch.rand(3, 32, 32), ValueError, r"shape \(N, 3, H, W\)"),
        (torch.rand(1, 1, 32, 32), ValueError, "3 \\(RGB\\) channels"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), TypeError, "floating-point"),
        (torch.rand(1, 3, 32, 32) * 255, ValueError, "divide by 255"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "NaN"),
        (torch.full((1, 3, 32, 32), float("inf")), ValueError, "NaN or Inf"),
        (torch.rand(0, 3, 32, 32), ValueError, "empty batch"),
        (torch.rand(1, 3, 32, 32) - 0.5, ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_images_get_specific_errors(images, error, match):
    with pytest.raises(error, match=match):
        tiny()(images)


def test_mismatched_noise_shapes_are_rejected():
    purifier = tiny()
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="image_noise must have shape"):
        purifier(images, image_noise=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"feature_noise must have shape \(2, 64, 32\)"):
        purifier(images, feature_noise=torch.zeros(2, 64, 16))
    with pytest.raises(TypeError, match="feature_noise must be a floating-point"):
        purifier(images, feature_noise=torch.zeros(2, 64, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="only to mask_mode='noise'"):
        tiny(mask_mode="token")(images, image_noise=torch.zeros(2, 3, 32, 32))


def test_bfloat16_inference_on_cpu():
    purifier = tiny(mask_mode="token")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = purifier(images)
        half = purifier.to(torch.bfloat16)(images)
    assert half.dtype == torch.float32  # returned in the input's dtype
    assert (half - reference).abs().max() < 0.1


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(image_size=30), "multiple of patch_size"),
        (dict(encoder_heads=3), "divisible by encoder_heads"),
        (dict(fusion_taps=(0, 5)), "fusion_taps"),
        (dict(mask_mode="blur"), "mask_mode"),
        (dict(num_groups=5), "num_groups"),
        (dict(image_noise_t=1000), "image_noise_t"),
        (dict(unknown_field=1), "unknown PurifierConfig field"),
        (dict(mask_mode="token", noisy_skip=True), "noisy_skip"),
        (dict(skip_sigma_data=0.0), "skip_sigma_data"),
    ],
)
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        PurifierConfig.preset("tiny", **changes)


@pytest.mark.parametrize(
    "preset,changes,match",
    [
        ("tiny-conv", dict(pixel_head_width=8), r"PurifierConfig\.pixel_head_width applies to backbone='vit' only"),
        ("tiny-conv", dict(noisy_skip=True), r"PurifierConfig\.noisy_skip"),
        ("tiny-conv", dict(num_groups=2), r"PurifierConfig\.num_groups"),
        ("tiny-conv", dict(partition="random"), r"PurifierConfig\.partition"),
        ("tiny-conv", dict(encoder_depth=3), r"PurifierConfig\.encoder_depth"),
        ("tiny", dict(conv_width=32), r"PurifierConfig\.conv_width applies to backbone='conv' only"),
        ("tiny", dict(backbone="unet"), r"PurifierConfig\.backbone must be 'vit' or 'conv'"),
        ("tiny-conv", dict(conv_depth=0), r"PurifierConfig\.conv_depth"),
    ],
)
def test_a_backbone_refuses_what_it_cannot_carry_naming_the_field(preset, changes, match):
    with pytest.raises(ValueError, match=match):
        PurifierConfig.preset(preset, **changes)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="cifar10-s"):
        PurifierConfig.preset("vit-huge")


@pytest.mark.slow
def test_torch_compile_matches_eager_in_token_mode():
    torch.manual_seed(0)
    purifier = Purifier(PurifierConfig.preset("tiny", mask_mode="token")).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(purifier)
    with torch.no_grad():
        expected = purifier(images)
        assert torch.allclose(compiled(images), expected, atol=1e-5)
        flipped = images.flip(-1)  # a new input of the same shape
        assert torch.allclose(compiled(flipped), purifier(flipped), atol=1e-5)
