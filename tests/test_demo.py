"""`impure demo` and `impure.demo`: the shipped samples, user inputs, the report, the grid, and errors.

The purifier here is a randomly initialised "tiny" one saved with `save_pretrained` (fast; it destroys the
images, so only the plumbing and the measurements are checked), except in
`test_demo_default_bundled_weights`, which runs the bundled defaults.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from impure import Purifier, PurifierConfig
from impure.classifiers import bundled_classifier_card, load_classifier
from impure.cli import main
from impure.demo import (
    BOTTOM,
    CAPTION,
    CIFAR10_CLASSES,
    DEFAULT_CLASSIFIER,
    FRAME,
    GAP,
    GRID_COLUMNS,
    LEFT,
    ROW_GAP,
    SAMPLES_PATH,
    TILE,
    TOP,
    grid_font,
    load_demo_images,
    run_demo,
)

ACCURACY_ROWS = ("clean", "attacked, no defence", "purified clean", "purified attacked")


@pytest.fixture(scope="module")
def purifier_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("demo") / "tiny"
    Purifier(PurifierConfig.preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def samples():
    with np.load(SAMPLES_PATH) as archive:
        return {key: archive[key] for key in archive.files}


def _accuracies(report: str) -> dict[str, tuple[int, int]]:
    """{row: (correct, total)} parsed from the printed report."""
    found = {}
    for row in ACCURACY_ROWS:
        match = re.search(rf"^\s+{re.escape(row)}\s+[\d.]+%\s+\((\d+)/(\d+)\)$", report, flags=re.M)
        assert match, f"the report has no accuracy line {row!r}:\n{report}"
        found[row] = (int(match.group(1)), int(match.group(2)))
    return found


def test_shipped_samples_are_two_lossless_cifar10_test_images_per_class(samples):
    assert samples["images"].shape == (20, 32, 32, 3) and samples["images"].dtype == np.uint8
    assert tuple(samples["classes"]) == CIFAR10_CLASSES
    assert samples["labels"].tolist() == list(range(10)) * 2
    assert len(set(samples["test_index"].tolist())) == 20


def test_demo_on_shipped_samples_prints_report_and_writes_grid(tmp_path, purifier_folder, samples, capsys):
    out = tmp_path / "demo.png"
    status = main(["demo", "--purifier", str(purifier_folder), "--device", "cpu", "-o", str(out)])
    report = capsys.readouterr().out
    assert status == 0, report
    accuracies = _accuracies(report)
    assert all(total == 20 for _, total in accuracies.values())
    # The clean accuracy is the bundled classifier's own on the samples; PGD at 8/255 lowers it.
    classifier = load_classifier(DEFAULT_CLASSIFIER)
    with torch.no_grad():
        logits = classifier(torch.from_numpy(samples["images"]).permute(0, 3, 1, 2).float() / 255)
    assert accuracies["clean"][0] == int((logits.argmax(1).numpy() == samples["labels"]).sum())
    assert accuracies["attacked, no defence"][0] < accuracies["clean"][0]
    assert re.search(r"x_adv - x\s+L-inf max 8/255", report)
    assert "P(x_adv) - P(x)" in report and "time" in report
    assert "20 images: a demonstration, each accuracy within about ±22 points; the README's table" in report
    assert "rows clean, adversarial, perturbation, purified clean, purified adv." in report  # as the picture
    # How the demo classifier's purified attack compares with the README's table, from its card
    measured = bundled_classifier_card(DEFAULT_CLASSIFIER)["through_purifier"]
    flat = " ".join(report.split())
    for name in (DEFAULT_CLASSIFIER, "cifar_resnet56"):
        assert f"{measured['accuracy'][name]['purified_adversarial']:.1f} %" in flat
    assert f"{DEFAULT_CLASSIFIER} is a ResNet-20 that no purifier was trained against" in flat
    with Image.open(out) as grid:
        width = TILE + 2 * FRAME + GAP
        height = TILE + 2 * FRAME + CAPTION + ROW_GAP  # the predicted class is written below each tile
        assert grid.size == (LEFT + GRID_COLUMNS * width, TOP + 5 * height + BOTTOM)
        pixels = np.asarray(grid.convert("RGB"))
    first = pixels[TOP + FRAME:TOP + FRAME + TILE, LEFT + FRAME:LEFT + FRAME + TILE]
    scale = TILE // 32
    np.testing.assert_array_equal(first, samples["images"][0].repeat(scale, 0).repeat(scale, 1))
    title = pixels[:TOP - 20, :LEFT + 4 * width]  # the title and the accuracies are drawn above the grid
    assert (title < 128).any()
    below = TOP + TILE + 2 * FRAME
    caption = pixels[below:below + CAPTION, LEFT:LEFT + width].astype(int)  # "→ airplane" or not
    # written in the frame's colour (green or red, not black), nearer its own tile than the next row's
    assert (abs(caption[..., 0] - caption[..., 1]) > 80).any()
    assert (pixels[below + CAPTION:TOP + height, LEFT:LEFT + width] > 250).all()  # then white up to the next row
    font = grid_font()  # the title keeps its spaces: "PGD on" is wider than "PGDon" by a visible space
    assert font.getlength("PGD on") - font.getlength("PGDon") >= 3


def test_demo_grid_shows_the_purified_clean_row_and_the_predicted_classes(purifier_folder):
    result = run_demo(purifier=str(purifier_folder), limit=4, steps=2, device="cpu")
    classifier = load_classifier(DEFAULT_CLASSIFIER)
    images = load_demo_images(limit=4)[0]
    with torch.no_grad():
        assert torch.equal(result.predictions["clean"], classifier(images).argmax(1))
        purified_clean = classifier(result.examples["purified_clean"]).argmax(1)
    assert torch.equal(result.predictions["purified_clean"], purified_clean)
    for name in ("clean", "attacked", "purified_clean", "purified_attacked"):
        assert torch.equal(getattr(result, f"{name}_correct"), result.predictions[name] == result.labels)
    pixels = np.asarray(result.grid_image().convert("RGB"))
    height = TILE + 2 * FRAME + CAPTION + ROW_GAP
    row = TOP + 3 * height + FRAME  # the fourth row: purified clean
    tile = pixels[row:row + TILE, LEFT + FRAME:LEFT + FRAME + TILE]
    expected = (result.examples["purified_clean"][0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    np.testing.assert_array_equal(tile[::TILE // 32, ::TILE // 32], expected.numpy())


def test_demo_refuses_to_overwrite_without_force(tmp_path, purifier_folder, capsys):
    out = tmp_path / "demo.png"
    out.write_bytes(b"keep me")
    args = ["demo", "--purifier", str(purifier_folder), "--device", "cpu", "--limit", "2", "--steps", "1",
            "-o", str(out)]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(args + ["--force"]) == 0
    with Image.open(out) as grid:
        assert grid.format == "PNG"


def test_run_demo_is_repeatable_with_a_seed(purifier_folder):
    settings = dict(purifier=str(purifier_folder), limit=6, steps=3, device="cpu")
    first, again = run_demo(seed=1, **settings), run_demo(seed=1, **settings)
    other = run_demo(seed=2, **settings)
    for name in ("attacked_correct", "purified_attacked_correct", "perturbation_l2", "residual_l2"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert torch.equal(first.examples["purified"], again.examples["purified"])
    assert not torch.equal(first.examples["adversarial"], other.examples["adversarial"])
    delta = first.examples["adversarial"] - first.examples["clean"]
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6
    assert torch.allclose(first.perturbation_l2, delta.flatten(1).norm(dim=1))
    assert set(first.accuracies) == {"clean", "attacked", "purified_clean", "purified_attacked"}


def test_residual_is_measured_with_the_same_purifier_noise(purifier_folder):
    purifier = Purifier.from_pretrained(purifier_folder)
    images = load_demo_images(limit=4)[0]
    with torch.no_grad():
        draws = [purifier(images, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    assert float((draws[0] - draws[1]).abs().max()) > 0.05  # the purifier is stochastic...
    result = run_demo(purifier=purifier, eps=1e-4, steps=1, limit=4, device="cpu")
    assert float(result.residual_linf.max()) < 0.01  # ...but P(x_adv) - P(x) compares equal noise draws
    with pytest.raises(ValueError, match="set_strength"):
        run_demo(purifier=purifier, strength=0.5, limit=2, device="cpu")


def test_demo_reads_an_npz(tmp_path, purifier_folder, samples, capsys):
    rows = [15, 3, 12, 7, 0]
    path = tmp_path / "mine.npz"
    np.savez(path, images=samples["images"][rows], labels=samples["labels"][rows])
    images, labels, _ = load_demo_images(path, limit=4)
    assert labels.tolist() == samples["labels"][rows[:4]].tolist()
    assert torch.equal((images * 255).round().byte().permute(0, 2, 3, 1), torch.from_numpy(samples["images"][rows[:4]]))
    status = main(["demo", str(path), "--purifier", str(purifier_folder), "--device", "cpu", "--limit", "4",
                   "--steps", "2", "-o", str(tmp_path / "grid.png")])
    report = capsys.readouterr().out
    assert status == 0, report
    assert f"4 images from {path}" in report
    assert all(total == 4 for _, total in _accuracies(report).values())


def test_demo_reads_a_class_folder(tmp_path, purifier_folder, samples, capsys):
    folder = tmp_path / "photos"
    for row in (3, 13, 8):  # cat, cat, ship: a folder's own class order is mapped onto CIFAR-10's
        (folder / CIFAR10_CLASSES[samples["labels"][row]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(samples["images"][row]).save(folder / CIFAR10_CLASSES[samples["labels"][row]] / f"{row}.png")
    Image.fromarray(samples["images"][8].repeat(2, 0).repeat(2, 1)).save(folder / "ship" / "large.png")
    images, labels, _ = load_demo_images(folder)
    assert labels.tolist() == [3, 3, 8, 8]
    assert images.shape == (4, 3, 32, 32)
    assert torch.equal((images[:3] * 255).round().byte().permute(0, 2, 3, 1),
                       torch.from_numpy(samples["images"][[13, 3, 8]]))  # files sort as 13.png, 3.png
    status = main(["demo", str(folder), "--purifier", str(purifier_folder), "--device", "cpu", "--steps", "1",
                   "-o", str(tmp_path / "grid.png")])
    assert status == 0
    assert all(total == 4 for _, total in _accuracies(capsys.readouterr().out).values())


def _bad_inputs(tmp_path, samples):
    np.savez(tmp_path / "keys.npz", x=samples["images"], y=samples["labels"])
    np.savez(tmp_path / "labels.npz", images=samples["images"][:2], labels=np.array([1, 12]))
    np.savez(tmp_path / "classes.npz", images=samples["images"][:2], labels=samples["labels"][:2],
             classes=np.array(["a", "b"]))
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    Image.fromarray(samples["images"][0]).save(tmp_path / "flat" / "a.png")
    (tmp_path / "dragons" / "dragon").mkdir(parents=True)
    Image.fromarray(samples["images"][0]).save(tmp_path / "dragons" / "dragon" / "a.png")
    (tmp_path / "notes.txt").write_text("hello")


@pytest.mark.parametrize(("name", "message"), [
    ("keys.npz", r"lacks the key\(s\) \['images', 'labels'\]"),
    ("labels.npz", r"labels must be CIFAR-10 class indices in \[0, 9\], got range \[1, 12\]"),
    ("classes.npz", r"are not CIFAR-10's"),
    ("empty", r"no images with suffix"),
    ("flat", r"has no class subfolders"),
    ("dragons", r"\['dragon'\] are not CIFAR-10 classes"),
    ("notes.txt", r"give a folder of class subfolders or an \.npz"),
    ("missing.npz", r"no such image folder or \.npz file"),
])
def test_demo_bad_input_gives_a_clear_error(tmp_path, purifier_folder, samples, capsys, name, message):
    _bad_inputs(tmp_path, samples)
    out = tmp_path / "grid.png"
    status = main(["demo", str(tmp_path / name), "--purifier", str(purifier_folder), "--device", "cpu",
                   "-o", str(out)])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("impure demo: error:") and re.search(message, error), error
    assert not out.exists()


def test_demo_missing_weights_name_lists_the_bundled_ones(tmp_path, capsys):
    status = main(["demo", "--purifier", "impure/no-such-weights", "-o", str(tmp_path / "grid.png")])
    assert status == 1
    assert "no bundled weights named 'impure/no-such-weights'; bundled:" in capsys.readouterr().err


def test_demo_rejects_an_output_that_is_not_png(tmp_path, purifier_folder, capsys):
    assert main(["demo", "--purifier", str(purifier_folder), "-o", str(tmp_path / "grid.jpg")]) == 1
    assert "must be a .png file" in capsys.readouterr().err


def test_demo_default_bundled_weights(tmp_path, capsys):
    """The README's main job on the bundled purifier "impure/cifar10" and classifier, offline."""
    out = tmp_path / "impure_demo.png"
    status = main(["demo", "--limit", "4", "--steps", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "purifier    impure/cifar10 (strength 1)" in captured.out
    assert "(strength 1) at noise t 80/120" in captured.out  # the absolute setting beside the relative one
    assert all(total == 4 for _, total in _accuracies(captured.out).values())
    width = TILE + 2 * FRAME + GAP
    with Image.open(out) as grid:  # four columns; the title may make it wider
        row = TILE + 2 * FRAME + CAPTION + ROW_GAP
        assert grid.width >= LEFT + 4 * width and grid.height == TOP + 5 * row + BOTTOM


def test_rerunning_the_demo_replaces_its_own_default_output(tmp_path, purifier_folder, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["demo", "--purifier", str(purifier_folder), "--device", "cpu", "--limit", "2", "--steps", "1"]
    assert main(args) == 0
    first = (tmp_path / "impure_demo.png").stat().st_mtime_ns
    assert main(args) == 0  # the README's first command, a second time
    assert (tmp_path / "impure_demo.png").stat().st_mtime_ns >= first


def test_version_option(capsys):
    import impure

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"impure {impure.__version__}"
