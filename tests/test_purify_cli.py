"""`impure purify` on real CIFAR-10 files, `purify_tiled`, and the strength knob."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from impure import Purifier, PurifierConfig
from impure.cli import main
from impure.tiling import purify_tiled


@pytest.fixture()
def purifier_folder(tmp_path):
    torch.manual_seed(0)
    Purifier(PurifierConfig.preset("tiny")).save_pretrained(tmp_path / "purifier")
    return tmp_path / "purifier"


@pytest.fixture()
def image_folder(tmp_path, shared_dir):
    images = np.load(shared_dir / "data" / "cifar10" / "test_dev.npz")["images"][:5]
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for i, image in enumerate(images[:4]):
        Image.fromarray(image).save(folder / f"img{i}.png")
    Image.fromarray(images[4]).save(folder / "nested" / "img4.jpg", quality=95)
    Image.fromarray(np.tile(images[0], (3, 2, 1))).save(folder / "large.png")  # 96 x 64: tiled
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_purify_writes_pngs_and_skips_unreadable_files(tmp_path, purifier_folder, image_folder, capsys):
    out = tmp_path / "clean"
    status = main(["purify", str(image_folder), "-o", str(out), "--purifier", str(purifier_folder),
                   "--device", "cpu", "--batch-size", "3"])
    assert status == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["img0.png", "img1.png", "img2.png", "img3.png", "large.png", "nested/img4.png"]
    assert "skipped unreadable file" in capsys.readouterr().out
    with Image.open(out / "large.png") as large, Image.open(image_folder / "large.png") as source:
        assert large.size == source.size
    with Image.open(out / "img0.png") as purified, Image.open(image_folder / "img0.png") as source:
        assert purified.size == (32, 32)
        assert np.abs(np.asarray(purified, dtype=int) - np.asarray(source, dtype=int)).mean() > 1


def test_purify_never_overwrites_without_force(tmp_path, purifier_folder, image_folder, capsys):
    out = tmp_path / "clean"
    args = ["purify", str(image_folder / "img0.png"), "-o", str(out), "--purifier", str(purifier_folder)]
    assert main(args) == 0
    before = (out / "img0.png").read_bytes()
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "img0.png").read_bytes() == before
    assert main(args + ["--force", "--seed", "5"]) == 0


def test_purify_reports_missing_inputs_and_bad_purifiers(tmp_path, purifier_folder, capsys):
    assert main(["purify", str(tmp_path / "absent.png"), "-o", str(tmp_path / "o"),
                 "--purifier", str(purifier_folder)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_tiles_are_purified_like_separate_images():
    purifier = Purifier(PurifierConfig.preset("tiny", mask_mode="token")).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        tiled = purify_tiled(purifier, images, tile=32, batch_size=5)
        corner = purifier(images[:, :, 32:64, 64:96])
    assert tiled.shape == images.shape
    torch.testing.assert_close(tiled[:, :, 32:64, 64:96], corner, atol=1e-5, rtol=0)


def test_strength_scales_the_noise_timesteps():
    purifier = Purifier(PurifierConfig.preset("tiny"))
    purifier.set_strength(0.5)
    assert (purifier.config.image_noise_t, purifier.config.feature_noise_t) == (200, 300)
    purifier.set_strength(10)
    assert purifier.config.image_noise_t == purifier.config.feature_noise_t == 999
    purifier.set_strength(1)  # relative to the nominal setting, not the last one
    assert (purifier.config.image_noise_t, purifier.config.feature_noise_t) == (400, 600)
    with pytest.raises(ValueError, match="noise-mode"):
        Purifier(PurifierConfig.preset("tiny", mask_mode="token")).set_strength(0.5)


def test_purify_dtype_option_bf16_stays_close_to_fp32_and_fp16_is_refused_on_the_cpu(tmp_path, image_folder,
                                                                                       capsys):
    outputs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        assert main(["purify", str(image_folder / "img0.png"), "-o", str(out), "--purifier", "impure/cifar10-s",
                     "--device", "cpu", "--dtype", dtype]) == 0
        with Image.open(out / "img0.png") as image:
            outputs[dtype] = np.asarray(image, dtype=float)
    mse = np.mean((outputs["fp32"] - outputs["bf16"]) ** 2)
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 30  # bf16 rounds, but the picture is the same
    assert main(["purify", str(image_folder / "img0.png"), "-o", str(tmp_path / "fp16"), "--device", "cpu",
                 "--dtype", "fp16"]) == 1
    assert "precision 'fp16' for inference is not supported on cpu" in capsys.readouterr().err
