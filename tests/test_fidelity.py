"""The purifier computes what the paper's reference implementation computes (../shared/reference)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from impure import Purifier, PurifierConfig
from impure.model.masking import linear_noise_schedule
from impure.model.reference import convert_reference_state_dict, reference_config

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference(shared_dir):
    ref = shared_dir / "reference"
    return ref / "ref_small.safetensors", load_file(str(ref / "ref_small_io.safetensors"))


@pytest.mark.parametrize("mode,inputs", [("a", "x"), ("c", "x48")])
def test_token_mode_matches_reference(reference, mode, inputs):
    path, io = reference
    purifier = Purifier.from_reference(path, mask_mode="token")
    with torch.no_grad():
        out = purifier(io[inputs], clamp=False)
    assert (out - io[f"{mode}.out"]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("mode,inputs", [("b", "x"), ("d", "x48")])
def test_noise_mode_with_replayed_noise_matches_reference(reference, mode, inputs):
    path, io = reference
    purifier = Purifier.from_reference(path)
    assert purifier.config.mask_mode == "noise"
    with torch.no_grad():
        out = purifier(io[inputs], image_noise=io[f"{mode}.noise_img"],
                       feature_noise=io[f"{mode}.noise_feat_by_patch"], clamp=False)
    assert (out - io[f"{mode}.out"]).abs().max() <= TOLERANCE
    # Fresh noise gives a different (but valid) purification: the replay is what makes them equal.
    with torch.no_grad():
        fresh = purifier(io[inputs], clamp=False)
    assert (fresh - io[f"{mode}.out"]).abs().max() > 1e-3


def test_inferred_config_matches_the_fixture(shared_dir):
    recorded = json.loads((shared_dir / "reference" / "ref_small_config.json").read_text())["constructor_args"]
    config = Purifier.from_reference(shared_dir / "reference" / "ref_small.safetensors").config
    assert config == PurifierConfig.preset("reference-small")
    assert (config.image_size, config.patch_size, config.encoder_width, config.encoder_depth) == (
        recorded["img_size"], recorded["patch_size"], recorded["embed_dim"], recorded["depth"])
    assert config.fusion_taps == tuple(recorded["out_indices"])


def test_position_window_matches_reference_rows(reference):
    _, io = reference
    purifier = Purifier.from_reference(reference[0]).eval()
    for mode, inputs in (("a", "x"), ("c", "x48")):
        layout = purifier.layout(io[inputs], None)
        raster_rows = torch.empty_like(layout.positions[0])
        raster_rows[layout.order[0]] = layout.positions[0]
        assert torch.equal(raster_rows, io[f"{mode}.index_pos"][0])


def test_torch_save_checkpoint_with_model_entry(reference, tmp_path):
    path, io = reference
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": load_file(str(path)), "epoch": 3}, checkpoint)
    purifier = Purifier.from_reference(checkpoint, mask_mode="token")
    with torch.no_grad():
        assert (purifier(io["x"], clamp=False) - io["a.out"]).abs().max() <= TOLERANCE


def test_reference_checkpoint_errors(reference, tmp_path):
    path, _ = reference
    state = load_file(str(path))
    save_file({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match="extra.weight"):
        Purifier.from_reference(tmp_path / "extra.safetensors")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": state, "args": object()}, pickled)
    with pytest.raises(ValueError, match="weights-only"):
        Purifier.from_reference(pickled)
    with pytest.raises(FileNotFoundError):
        Purifier.from_reference(tmp_path / "absent.safetensors")
    state["sqrt_alphas_cumprod"] = state["sqrt_alphas_cumprod"] * 0.5
    save_file(state, tmp_path / "schedule.safetensors")
    with pytest.raises(ValueError, match="noise schedule"):
        Purifier.from_reference(tmp_path / "schedule.safetensors")
    # Designs the reference does not have are refused by name, never built around its weights.
    for field, value in (("pixel_head_width", 32), ("noisy_skip", True)):
        with pytest.raises(ValueError, match=f"reference implementation has no {field}"):
            Purifier.from_reference(path, **{field: value})


def test_heads_must_be_given_when_no_preset_matches(reference, tmp_path):
    path, _ = reference
    state = load_file(str(path))
    del state["blocks.9.norm1.weight"]  # depth no longer matches any preset
    state = {k: v for k, v in state.items() if not k.startswith("blocks.9.")}
    save_file(state, tmp_path / "depth9.safetensors")
    with pytest.raises(ValueError, match="encoder_heads"):
        Purifier.from_reference(tmp_path / "depth9.safetensors")
    purifier = Purifier.from_reference(tmp_path / "depth9.safetensors", encoder_heads=4, decoder_heads=4)
    assert purifier.config.encoder_depth == 9


def test_every_vitb16_key_maps_into_the_paper_preset(shared_dir):
    """The authors' released ImageNet checkpoint (keys and shapes below) loads into "paper-vitb16"."""
    listing = json.loads((shared_dir / "reference" / "vitb16_keys.json").read_text())
    state = {item["key"]: torch.empty(item["shape"], dtype=torch.float32) for item in listing["keys"]}
    assert len(state) == listing["num_keys"] == 273
    # The stored schedule is checked against the config's, so give it its true values.
    state["sqrt_alphas_cumprod"], state["sqrt_one_minus_alphas_cumprod"] = linear_noise_schedule(1000, 1e-4, 0.02)
    config = reference_config(state)
    assert config == PurifierConfig.preset("paper-vitb16")
    converted = convert_reference_state_dict(state, config)
    expected = Purifier(config).state_dict()
    assert set(converted) == set(expected)
    assert all(converted[key].shape == expected[key].shape for key in expected)
    derived = {"pos_embed", "decoder_pos_embed", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
               "mask_token"}
    assert len(converted) == len(state) - len(derived)
