"""Patch mixing: a random 1/2, 1/3 or 1/4 of each sample's patches from the input, gradient via the rest."""

from __future__ import annotations

import pytest
import torch

from impure.training.mixing import mix_patches, patch_mixing_mask


def _patch_grid(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 1, H, W) pixel mask -> (N, rows, cols) patch mask (top-left pixel of each patch)."""
    return mask[:, 0, ::patch, ::patch]


def test_each_sample_takes_a_fraction_of_whole_patches():
    generator = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(30):
        mask = patch_mixing_mask(8, 32, 32, 4, generator=generator)
        grid = _patch_grid(mask, 4)
        # Whole patches: every pixel of a patch agrees with its top-left pixel.
        assert torch.equal(mask, grid.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None])
        per_sample = grid.flatten(1).sum(dim=1)
        assert len(set(per_sample.tolist())) == 1  # one fraction for the whole batch
        counts.add(int(per_sample[0]))
        assert len({tuple(row.tolist()) for row in grid.flatten(1)}) > 1  # a different set per sample
    assert counts == {32, 21, 16}  # round(64/2), round(64/3), round(64/4): all three fractions occur


def test_every_position_is_eligible_including_the_last():
    generator = torch.Generator().manual_seed(1)
    mask = patch_mixing_mask(4000, 8, 8, 4, generator=generator)  # 4 patches per sample
    frequency = _patch_grid(mask, 4).float().mean(dim=0)
    assert bool((frequency > 0.2).all()), frequency  # uniform positions: about (1/2+1/3+1/4)/3 ~ 0.36 each


def test_mask_is_reproducible_and_handles_partial_patches():
    a = patch_mixing_mask(3, 30, 18, 4, generator=torch.Generator().manual_seed(5))
    b = patch_mixing_mask(3, 30, 18, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3, 1, 30, 18) and a.dtype == torch.bool
    with pytest.raises(ValueError, match="must be positive"):
        patch_mixing_mask(3, 30, 18, 0)
    with pytest.raises(ValueError, match="fractions"):
        patch_mixing_mask(3, 30, 18, 4, fractions=(1.5,))


def test_gradients_flow_only_through_purified_patches():
    inputs = torch.rand(4, 3, 16, 16, requires_grad=True)
    purified = torch.rand(4, 3, 16, 16, requires_grad=True)
    mixed, mask = mix_patches(inputs, purified, 4, generator=torch.Generator().manual_seed(2))
    expanded = mask.expand_as(mixed)
    assert torch.equal(mixed[expanded], inputs[expanded])
    assert torch.equal(mixed[~expanded], purified[~expanded])
    mixed.sum().backward()
    assert inputs.grad is None  # the input is detached
    assert torch.equal(purified.grad, (~expanded).float())
    with pytest.raises(ValueError, match="must be equal"):
        mix_patches(inputs, purified[:, :, :8], 4)
