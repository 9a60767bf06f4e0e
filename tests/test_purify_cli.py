"""`impure purify` on real CIFAR-10 files, `purify_tiled`, and the strength knob."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from impure import Purifier, PurifierConfig
from impure.cli import main
from impure.defences.tiling import default_overlap, purify_tiled, tile_positions


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


def test_purify_writes_pngs_and_reports_unreadable_files(tmp_path, purifier_folder, image_folder, capsys):
    out = tmp_path / "clean"
    status = main(["purify", str(image_folder), "-o", str(out), "--purifier", str(purifier_folder),
                   "--device", "cpu", "--batch-size", "3"])
    assert status == 1  # one file of seven failed: the others are written, and the run says so
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["img0.png", "img1.png", "img2.png", "img3.png", "large.png", "nested/img4.png"]
    printed = capsys.readouterr().out
    assert f"failed: {image_folder / 'broken.png'}: UnidentifiedImageError" in printed
    report = json.loads((out / "purify-report.json").read_text())
    assert report["purified"] == 6 and [f["file"] for f in report["failed"]] == [str(image_folder / "broken.png")]
    (image_folder / "broken.png").unlink()
    assert main(["purify", str(image_folder), "-o", str(tmp_path / "all"), "--purifier", str(purifier_folder),
                 "--device", "cpu", "--no-progress"]) == 0  # every file purified
    assert json.loads((tmp_path / "all" / "purify-report.json").read_text()) == {"purified": 6, "failed": []}
    capsys.readouterr()
    assert printed.count("are far from the 32-px images this purifier was trained on") == 1  # 96 x 64, once
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


def test_tiles_overlap_and_blend_to_a_weighted_average():
    identity = lambda images, generator=None: images  # noqa: E731
    for shape in ((2, 3, 64, 96), (1, 3, 70, 45), (1, 3, 10, 7), (1, 3, 343, 502)):
        images = torch.rand(shape)
        for overlap in (None, 16):
            torch.testing.assert_close(purify_tiled(identity, images, tile=32, batch_size=5, overlap=overlap),
                                       images, atol=1e-6, rtol=0)  # a weighted average of equal values
    assert tile_positions(96, 32, 4) == [0, 21, 43, 64] and tile_positions(20, 32, 4) == [0]
    assert default_overlap(32) == 3
    purifier = Purifier(PurifierConfig.preset("tiny", mask_mode="token")).eval()
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        tiled = purify_tiled(purifier, images, tile=32, batch_size=5)
        first = purifier(images[:, :, :32, :32])  # rows 0-15 and columns 0-20 lie in the first tile alone
    assert tiled.shape == images.shape
    torch.testing.assert_close(tiled[:, :, :16, :21], first[:, :, :16, :21], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"overlap in \[1, tile / 2\]"):
        purify_tiled(purifier, images, tile=32, overlap=17)


def test_tiling_purifies_each_pixel_about_1_3_times():
    calls = []

    def counting(images, generator=None):
        calls.append(images.shape[0])
        return images

    purify_tiled(counting, torch.rand(1, 3, 512, 512), tile=32, batch_size=1000)
    assert sum(calls) * 32 * 32 / (512 * 512) < 1.35  # half-tile overlaps purified every pixel 4 times
    calls.clear()
    purify_tiled(counting, torch.rand(1, 3, 512, 512), tile=32, batch_size=1000, overlap=16)
    assert sum(calls) * 32 * 32 / (512 * 512) > 3.5


def test_a_photo_purified_by_the_cifar10_purifier_has_no_seams(shared_dir):
    """Edge strength where tiles meet is no larger than elsewhere (with plain abutting tiles it was about twice
    as large)."""
    photo = np.load(shared_dir / "data" / "imagenet" / "samples224_dev.npz")["images"][:2]
    images = torch.from_numpy(photo).permute(0, 3, 1, 2).float() / 255
    purifier = Purifier.from_pretrained("impure/cifar10-s")
    with torch.no_grad():
        purified = purify_tiled(purifier, images, tile=32, generator=torch.Generator().manual_seed(0))
    steps = (purified[..., :, 1:] - purified[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # per column boundary
    starts = tile_positions(images.shape[-1], 32, default_overlap(32))[1:]
    ends = [start + 31 for start in tile_positions(images.shape[-1], 32, default_overlap(32))[:-1]]
    seams = sorted({*starts, *ends, *(e - 1 for e in ends), *(s - 1 for s in starts)})  # where a tile's value ends
    at_seams = steps[seams].mean()
    elsewhere = steps[[i for i in range(len(steps)) if i not in seams]].mean()
    assert at_seams / elsewhere < 1.1  # 0.98 at the default overlap; 1.19 with 1-px overlaps


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


def test_noise_timesteps_are_set_absolutely_and_saved_as_the_new_nominal(tmp_path):
    purifier = Purifier(PurifierConfig.preset("tiny"))  # nominal t 400/600
    assert purifier.noise_t == purifier.nominal_noise_t == (400, 600)
    assert purifier.set_noise_t(80).noise_t == (80, 120)  # the feature timestep keeps the nominal ratio
    assert purifier.set_noise_t(80, 100).noise_t == (80, 100)
    assert purifier.set_strength(0.5).noise_t == (200, 300)  # strength stays relative to the nominal setting
    purifier.set_noise_t(90, 135).save_pretrained(tmp_path)
    loaded = Purifier.from_pretrained(tmp_path)  # a saved folder loads at the timesteps it was saved at
    assert loaded.noise_t == loaded.nominal_noise_t == (90, 135)
    for bad, match in ((1000, "image_noise_t must be an integer in \\[0, 999\\], got 1000"),
                       (80.5, "image_noise_t must be an integer"), (True, "image_noise_t must be an integer")):
        with pytest.raises(ValueError, match=match):
            purifier.set_noise_t(bad, 120)
    with pytest.raises(ValueError, match="noise-mode"):
        Purifier(PurifierConfig.preset("tiny", mask_mode="token")).set_noise_t(80)


def test_training_noise_ranges_can_be_narrowed_and_are_saved_with_the_weights(tmp_path):
    purifier = Purifier(PurifierConfig.preset("tiny")).set_training_noise((80, 240), (120, 360))
    assert purifier.config.train_image_noise_t == (80, 240) and purifier.config.train_feature_noise_t == (120, 360)
    purifier.save_pretrained(tmp_path)
    loaded = Purifier.from_pretrained(tmp_path).config
    assert loaded.train_image_noise_t == (80, 240) and loaded.train_feature_noise_t == (120, 360)
    with pytest.raises(ValueError, match="train_image_noise_t"):
        purifier.set_training_noise((240, 80), (120, 360))


def test_purify_noise_t_option_sets_the_timesteps_absolutely(tmp_path, image_folder, capsys):
    image = str(image_folder / "img0.png")
    outputs = {}
    for name, option in (("strength", ["--strength", "0.5"]), ("noise-t", ["--noise-t", "40/60"])):
        assert main(["purify", image, "-o", str(tmp_path / name), "--purifier", "impure/cifar10", "--device",
                     "cpu", *option]) == 0
        with Image.open(tmp_path / name / "img0.png") as output:
            outputs[name] = np.asarray(output)
    np.testing.assert_array_equal(outputs["strength"], outputs["noise-t"])  # impure/cifar10 is saved at t 80/120
    with pytest.raises(SystemExit) as caught:  # a usage error: status 2
        main(["purify", image, "-o", str(tmp_path / "both"), "--strength", "2", "--noise-t", "40/60"])
    assert caught.value.code == 2 and "give --strength or --noise-t, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["purify", image, "-o", str(tmp_path / "bad"), "--noise-t", "40"])
    assert "noise timesteps must look like 80/120" in capsys.readouterr().err


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


def test_a_grey_image_is_purified_as_grey(tmp_path, shared_dir):
    """The bundled purifier on a real CIFAR-10 image turned grey: the output is a grey PNG (no colour tint)."""
    image = np.load(shared_dir / "data" / "cifar10" / "test_dev.npz")["images"][0]
    Image.fromarray(image).convert("L").save(tmp_path / "grey.png")
    assert main(["purify", str(tmp_path / "grey.png"), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    with Image.open(tmp_path / "out" / "grey.png") as purified, Image.open(tmp_path / "grey.png") as source:
        assert purified.mode == "L" and purified.size == source.size
        difference = np.abs(np.asarray(purified, dtype=int) - np.asarray(source, dtype=int))
        assert 0 < difference.mean() < 20  # purified, and still the same picture


def test_purify_carries_alpha_through_untouched_and_keeps_grey_grey(tmp_path, purifier_folder, shared_dir, capsys):
    image = np.load(shared_dir / "data" / "cifar10" / "test_dev.npz")["images"][0]
    alpha = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))  # a gradient: every value must survive
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.dstack([image, alpha]), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(np.dstack([image[..., 0], alpha]), mode="LA").save(folder / "grey-alpha.png")
    Image.fromarray(image[..., 1]).save(folder / "grey.png")
    assert main(["purify", str(folder), "-o", str(tmp_path / "out"), "--purifier", str(purifier_folder),
                 "--device", "cpu", "--no-progress"]) == 0
    assert "has an alpha channel; it is carried through untouched" in capsys.readouterr().out
    for name, mode in (("rgba.png", "RGBA"), ("grey-alpha.png", "LA"), ("grey.png", "L")):
        with Image.open(tmp_path / "out" / name) as purified:
            assert purified.mode == mode, name
            if "A" in mode:
                np.testing.assert_array_equal(np.asarray(purified.getchannel("A")), alpha)


def test_each_image_has_its_own_noise_so_batching_and_company_do_not_change_its_bytes(tmp_path, purifier_folder,
                                                                                      image_folder):
    """The noise of an image is drawn from (seed, its path): batch size 1 or 64, alone or among others, and a
    tiled image, give the same bytes; another seed gives other bytes."""
    (image_folder / "broken.png").unlink()
    outputs = {}
    for name, inputs, batch, seed in (("b1", [image_folder], "1", "0"), ("b64", [image_folder], "64", "0"),
                                      ("alone", [image_folder / "img2.png"], "64", "0"),
                                      ("seed1", [image_folder], "64", "1")):
        out = tmp_path / name
        assert main(["purify", *map(str, inputs), "-o", str(out), "--purifier", str(purifier_folder), "--device",
                     "cpu", "--batch-size", batch, "--seed", seed, "--no-progress"]) == 0
        outputs[name] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}
    assert outputs["b1"] == outputs["b64"] and len(outputs["b1"]) == 6
    assert outputs["alone"]["img2.png"] == outputs["b64"]["img2.png"]
    assert outputs["seed1"]["img2.png"] != outputs["b64"]["img2.png"]


def test_resume_skips_complete_outputs_and_ends_with_the_uninterrupted_files(tmp_path, purifier_folder, image_folder):
    (image_folder / "broken.png").unlink()
    args = ["--purifier", str(purifier_folder), "--device", "cpu", "--no-progress"]
    assert main(["purify", str(image_folder), "-o", str(tmp_path / "whole"), *args]) == 0
    part = tmp_path / "part"
    assert main(["purify", str(image_folder / "img1.png"), str(image_folder / "large.png"), "-o", str(part),
                 *args]) == 0  # an "interrupted" run: two files written
    written = (part / "img1.png").stat().st_mtime_ns
    assert main(["purify", str(image_folder), "-o", str(part), *args]) == 1  # refused: files exist
    assert main(["purify", str(image_folder), "-o", str(part), "--resume", *args]) == 0
    assert (part / "img1.png").stat().st_mtime_ns == written  # kept, not purified again
    files = {p.relative_to(tmp_path / "whole").as_posix() for p in (tmp_path / "whole").rglob("*.png")}
    assert {p.relative_to(part).as_posix() for p in part.rglob("*.png")} == files
    for name in files:
        assert (part / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


@pytest.mark.slow
def test_two_processes_under_torchrun_share_the_files_and_write_the_same_bytes(tmp_path, purifier_folder,
                                                                               image_folder):
    """Each rank purifies every second file; the outputs equal one process's, byte for byte, and the unreadable
    file of rank 1's share is listed in the one report that rank 0 writes, with exit status 1."""
    args = [str(image_folder), "--purifier", str(purifier_folder), "--device", "cpu", "--no-progress"]
    assert main(["purify", *args, "-o", str(tmp_path / "one")]) == 1  # broken.png
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "impure",
               "purify", *args, "-o", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert done.returncode != 0 and "exitcode  : 1" in done.stderr  # torchrun reports the ranks' status 1
    assert done.stdout.count("purified 6 image(s)") == 1 and done.stdout.count("failed: ") == 1
    one, two = tmp_path / "one", tmp_path / "two"
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.png"))
    assert len(files) == 6 and files == sorted(p.relative_to(two).as_posix() for p in two.rglob("*.png"))
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in files)
    assert json.loads((two / "purify-report.json").read_text()) == json.loads((one / "purify-report.json").read_text())
