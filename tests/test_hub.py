"""Weights: save_pretrained / from_pretrained for folders, bundled names and the Hugging Face cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import impure.hub_files
from impure import Purifier, PurifierConfig
from impure.model.reference import reference_config


def _purifier(mode: str = "token") -> Purifier:
    torch.manual_seed(3)
    return Purifier(PurifierConfig.preset("tiny", mask_mode=mode)).eval()


def _outputs(purifier: Purifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return purifier(images, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["token", "noise"])
def test_save_and_load_give_identical_outputs(tmp_path, mode):
    purifier = _purifier(mode)
    purifier.save_pretrained(tmp_path / "model")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "model").iterdir()}
    assert json.loads((tmp_path / "model" / "config.json").read_text())["mask_mode"] == mode
    loaded = Purifier.from_pretrained(tmp_path / "model")
    assert loaded.config == purifier.config and not loaded.training
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(_outputs(purifier, images), _outputs(loaded, images))


@pytest.mark.parametrize("mode", ["token", "noise"])
def test_the_conv_backbone_saves_and_loads_like_the_vit(tmp_path, mode):
    torch.manual_seed(3)
    purifier = Purifier(PurifierConfig.preset("tiny-conv", mask_mode=mode)).eval()
    purifier.save_pretrained(tmp_path / "conv")
    assert json.loads((tmp_path / "conv" / "config.json").read_text())["backbone"] == "conv"
    loaded = Purifier.from_pretrained(tmp_path / "conv")
    assert loaded.config == purifier.config and not loaded.training
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(_outputs(purifier, images), _outputs(loaded, images))
    assert Purifier.from_pretrained(tmp_path / "conv", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_a_checkpoint_never_loads_into_the_other_backbone(tmp_path):
    """A ViT's weights under a conv config (a config.json edited or swapped), and the reverse, are refused with
    an error that names both backbones; so is a direct load_state_dict."""
    vit, conv = _purifier(), Purifier(PurifierConfig.preset("tiny-conv"))
    for weights, other in ((vit, conv), (conv, vit)):
        folder = tmp_path / weights.config.backbone
        weights.save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps(other.config.to_dict()))
        found, wanted = weights.config.backbone, other.config.backbone
        expected = rf"belong to a backbone='{found}' purifier, but this purifier is backbone='{wanted}'"
        with pytest.raises(ValueError, match=expected):
            Purifier.from_pretrained(folder)
        with pytest.raises(ValueError, match=expected):
            other.load_state_dict(weights.state_dict())
    reference = {"patch_embed.proj.weight": torch.zeros(32, 3, 4, 4), "pos_embed": torch.zeros(1, 65, 32),
                 "decoder_embed.weight": torch.zeros(32, 32), "decoder_head_embed.weight": torch.zeros(32, 96)}
    with pytest.raises(ValueError, match="load into backbone='vit' only"):
        reference_config(reference, backbone="conv")


def test_save_leaves_no_temporary_files(tmp_path):
    _purifier().save_pretrained(tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_config_overrides_and_dtype_on_load(tmp_path):
    _purifier("noise").save_pretrained(tmp_path)
    loaded = Purifier.from_pretrained(tmp_path, image_noise_t=250, dtype=torch.bfloat16, device="cpu")
    assert loaded.config.image_noise_t == 250
    assert loaded.dtype == torch.bfloat16


def _saved(tmp_path: Path) -> Path:
    _purifier().save_pretrained(tmp_path)
    return tmp_path


def test_missing_tensor_is_named(tmp_path):
    folder = _saved(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    del state["decoder_norm.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys: decoder_norm.weight$"):
        Purifier.from_pretrained(folder)


def test_unexpected_and_misshaped_tensors_are_named(tmp_path):
    folder = _saved(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["surprise"] = torch.zeros(2)
    state["cls_token"] = torch.zeros(1, 1, 7)
    save_file(state, folder / "model.safetensors")
    expected = r"unexpected keys: surprise; shape mismatches: cls_token \(file \(1, 1, 7\), model \(1, 1, 32\)\)"
    with pytest.raises(ValueError, match=expected):
        Purifier.from_pretrained(folder)


def test_unknown_config_field_is_named(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["dropout"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown PurifierConfig field\(s\) \['dropout'\]"):
        Purifier.from_pretrained(folder)


def test_only_safetensors_are_read(tmp_path):
    folder = _saved(tmp_path)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        Purifier.from_pretrained(folder)


def test_bundled_names_resolve_inside_the_package(tmp_path, monkeypatch):
    _purifier().save_pretrained(tmp_path / "demo-net")
    monkeypatch.setattr(impure.hub_files, "BUNDLED_ROOT", tmp_path)
    assert impure.hub_files.bundled_names() == ["impure/demo-net"]
    assert Purifier.from_pretrained("impure/demo-net").config.mask_mode == "token"


def _populate_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """Lay out files as the Hugging Face cache stores a downloaded snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((source / name).read_bytes())


def test_hub_id_loads_offline_from_a_populated_cache(tmp_path):
    _purifier().save_pretrained(tmp_path / "export")
    _populate_hub_cache(tmp_path / "cache", "someone/impure-tiny", tmp_path / "export")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    code = ("from impure import Purifier; p = Purifier.from_pretrained('someone/impure-tiny'); "
            "print(p.config.mask_mode)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("token")
    loaded = Purifier.from_pretrained("someone/impure-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(_outputs(loaded, images), _outputs(_purifier(), images))


def test_unavailable_id_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-purifier'.*not a bundled name"):
        Purifier.from_pretrained("nobody/no-such-purifier", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Purifier.from_pretrained("./not/a/folder")
    with pytest.raises(FileNotFoundError, match="no bundled weights named 'impure/no-such-net'"):
        Purifier.from_pretrained("impure/no-such-net")  # the bundled namespace is never looked up on the Hub


def test_loading_goes_through_the_hub_mixin_hook_and_names_without_org_fail_at_once(tmp_path, monkeypatch):
    import time

    folder = _saved(tmp_path)
    calls = []
    original = Purifier._from_pretrained.__func__

    def spy(cls, **kwargs):
        calls.append(sorted(kwargs))
        return original(cls, **kwargs)

    monkeypatch.setattr(Purifier, "_from_pretrained", classmethod(spy))
    loaded = Purifier.from_pretrained(folder, force_download=True, dtype=torch.float64, image_noise_t=7)
    assert loaded.dtype == torch.float64 and loaded.config.image_noise_t == 7
    assert {"model_id", "force_download", "revision", "cache_dir", "token", "config"} <= set(calls[0])
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="a Hugging Face Hub id has the form 'org/name'"):
        Purifier.from_pretrained("cifar10-s")  # neither a folder nor a bundled name: no Hub lookup
    assert time.perf_counter() - start < 1
