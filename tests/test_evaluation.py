"""`impure.evaluation` and `impure evaluate` on real CIFAR-10 images with the shared ResNet-20."""

from __future__ import annotations

import dataclasses
import json
import sys
import urllib.error

import pytest
import torch
from PIL import Image
from torch import nn

from impure import Purifier, PurifierConfig
from impure.classifiers import CifarResNet, cifar_resnet20
from impure.cli import main
from impure.cli.options import eps_argument as parse_eps
from impure.data import load_npz
from impure.defences.baselines import JPEG
from impure.evaluation import (
    EvaluationResult,
    attack_settings,
    choice_reason,
    choose_by_seed_means,
    evaluate,
    frontier_table,
    l2_norm,
    linf_norm,
    list_attacks,
    load_data,
    pareto_front,
    psnr,
    resolve_classifier,
    resolve_purifier,
    seed_means,
    seed_means_table,
    summary_table,
)

EPS = 8 / 255
FAST = {"steps": 5, "batch_size": 16, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def paths(shared_dir):
    return {"data": shared_dir / "data" / "cifar10" / "test_dev.npz",
            "weights": shared_dir / "models" / "cifar10_resnet20.safetensors"}  # fmt: skip


@pytest.fixture(scope="module")
def data(paths):
    images, labels = load_npz(paths["data"])
    return images[:32], labels[:32]


@pytest.fixture(scope="module")
def model(paths):
    return cifar_resnet20(paths["weights"])


@pytest.fixture(scope="module")
def undefended(model, data):
    return evaluate(model, data, None, attacks=["fgsm", "pgd"], keep_examples=4, **FAST)


class GreyImage(nn.Module):
    """A constructed defence that outputs mid-grey whatever the input."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(images, 0.5)


class GaussianNoise(nn.Module):
    """A constructed stochastic defence: the input plus noise from the global random state."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + 0.05 * torch.randn_like(images)


class Recording(nn.Module):
    """A constructed deterministic defence (lower contrast) that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(images.shape[0])
        return 0.9 * images + 0.05


def test_no_defence_pgd_breaks_the_classifier(model, data, undefended):
    images, labels = data
    with torch.no_grad():
        bare = (model(images).argmax(1) == labels).float().mean().item()
    result = undefended
    assert result.clean_accuracy == pytest.approx(bare) and bare >= 0.85
    assert result.defended_accuracy == result.clean_accuracy and result.psnr is None
    assert result.robust_accuracy("pgd") <= 0.05
    assert result.robust_accuracy("fgsm") < bare - 0.3
    for entry in result.attacks:
        assert EPS - 1.5 / 255 <= entry.perturbation_linf <= EPS + 1e-6
    # Without a defence the residual is the perturbation itself; PGD spends its whole budget.
    pgd = [e for e in result.attacks if e.attack == "pgd"]
    assert [e.threat for e in pgd] == ["grey-box", "white-box"]
    assert pgd[0].residual_linf == pytest.approx(EPS, abs=0.5 / 255)
    assert pgd[0].robust_accuracy == pgd[1].robust_accuracy and pgd[0].residual_l2 == pgd[1].residual_l2
    assert result.worst_case["grey-box"] <= min(e.robust_accuracy for e in result.attacks)
    both = (result.robust_accuracy("fgsm") + result.robust_accuracy("pgd")) / 2
    assert result.mean["grey-box"] == pytest.approx(both)
    assert result.images_per_second > 0 and result.peak_memory_mb > 0


def test_jpeg_defends_grey_box_but_not_white_box(model, data, undefended):
    result = evaluate(model, data, "jpeg75", attacks=["pgd"], threat="both", **FAST)
    assert result.defence == "jpeg75" and not result.stochastic_defence and result.eot_samples == 1
    assert result.noise_t is None
    assert result.defended_accuracy >= 0.7
    assert 28 < result.psnr < 35
    grey, white = result.robust_accuracy("pgd", "grey-box"), result.robust_accuracy("pgd", "white-box")
    # Measured on 100 images: grey-box 43 %, white-box (BPDA through JPEG) 12 %, no defence 0 %.
    assert grey >= 0.25 and grey > undefended.robust_accuracy("pgd") + 0.2
    assert white < grey
    # JPEG re-quantises the perturbation into 8x8 blocks: the residual exceeds eps.
    assert all(e.residual_linf > EPS for e in result.attacks)


def test_residual_metrics_on_constructed_cases(model, data):
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, 1, 2, 3], delta[1, 0, 0, 0], delta[1, 2, 1, 1] = -0.25, 0.3, 0.4
    torch.testing.assert_close(linf_norm(delta), torch.tensor([0.25, 0.4]))
    torch.testing.assert_close(l2_norm(delta), torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(psnr(torch.full((1, 3, 4, 4), 0.6), torch.full((1, 3, 4, 4), 0.5)), torch.tensor([20.0]))

    images, labels = data
    grey = evaluate(model, data, GreyImage(), attacks=["fgsm"], threat="grey-box", **FAST)
    with torch.no_grad():
        grey_class = model(torch.full((1, 3, 32, 32), 0.5)).argmax().item()
    expected_psnr = (10 * torch.log10(1 / (images - 0.5).pow(2).flatten(1).mean(1))).mean().item()
    assert grey.defended_accuracy == pytest.approx((labels == grey_class).float().mean().item())
    assert grey.psnr == pytest.approx(expected_psnr, rel=1e-5)
    assert grey.attacks[0].residual_linf == 0 and grey.attacks[0].residual_l2 == 0
    assert grey.robust_accuracy("fgsm") == grey.defended_accuracy


def test_adversarial_cache_is_shared_across_defences(model, data):
    data = (data[0][:16], data[1][:16])
    kwargs = {"attacks": ["fgsm"], "threat": "grey-box", "keep_examples": 2, **FAST}
    cache = {}
    bare = evaluate(model, data, None, adversarial_cache=cache, **kwargs)
    assert len(cache) == 1 and next(iter(cache.values())).shape == (16, 3, 32, 32)
    jpeg = evaluate(model, data, "jpeg75", adversarial_cache=cache, **kwargs)
    assert torch.equal(bare.examples["grey-box/fgsm"]["adversarial"], jpeg.examples["grey-box/fgsm"]["adversarial"])
    for key in cache:  # replace the stored examples by the clean images: the next run must use them
        cache[key] = data[0].clone()
    reused = evaluate(model, data, "jpeg75", adversarial_cache=cache, **kwargs)
    assert reused.attacks[0].perturbation_linf == 0
    assert reused.robust_accuracy("fgsm") == reused.defended_accuracy


def test_clean_purification_is_reused_and_only_correct_images_are_attacked_through_the_defence(model, data):
    defence = Recording()
    evaluate(model, data, defence, attacks=["fgsm", "pgd"], threat="grey-box", **FAST)
    # the stochasticity probe, warm-up, one call per batch of 16 in the clean pass, then P(x_adv) only:
    # the attacks reuse the clean pass's P(x).
    assert defence.sizes == [4, 4, 16, 16, 16] + [16, 16] * 2
    images, labels = data[0][:16], data[1][:16].clone()
    labels[:5] = (labels[:5] + 1) % 10  # five images the defended classifier cannot get right
    defence.sizes.clear()
    white = evaluate(model, (images, labels), defence, attacks=["fgsm"], threat="white-box", **FAST)
    right = round(white.defended_accuracy * 16)
    assert 0 < right <= 11
    # FGSM makes one pass through the defence, over the images it classifies correctly when clean.
    assert defence.sizes == [4, 4, 16, 16, right, 16]
    entry = white.attacks[0]
    assert 0 < entry.perturbation_linf <= EPS + 1e-6 and entry.robust_accuracy <= white.defended_accuracy
    # Residuals cover the attacked images: P scales the perturbation by 0.9.
    assert entry.residual_linf == pytest.approx(0.9 * EPS, rel=1e-3)


def test_pareto_front_and_frontier_table(undefended):
    assert pareto_front([(0.9, 0.1), (0.8, 0.4), (0.7, 0.3), (0.8, 0.4), (0.5, 0.5), (0.9, 0.05)]) == [
        True, True, False, True, True, False]  # fmt: skip
    assert pareto_front([]) == [] and pareto_front([(0.2, 0.1)]) == [True]
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(0.5, float("nan"))])

    def variant(name: str, clean: float, pgd: float, mean: float) -> EvaluationResult:
        attacks = [dataclasses.replace(e, robust_accuracy=pgd if e.attack == "pgd" else e.robust_accuracy)
                   for e in undefended.attacks]  # fmt: skip
        return dataclasses.replace(undefended, defence=name, defended_accuracy=clean, psnr=30.0,
                                   attacks=attacks, mean={"grey-box": mean}, worst_case={"grey-box": 0.0})  # fmt: skip

    results = [variant("weak", 0.5, 0.3, 0.25), variant("jpeg", 0.85, 0.4, 0.4), variant("both", 0.6, 0.2, 0.3),
               dataclasses.replace(variant("dominated", 0.55, 0.2, 0.2), noise_t=[80, 120])]  # fmt: skip
    lines = frontier_table(results).splitlines()
    assert "PGD-5 grey-box" in lines[0] and "images/s (classifier)" in lines[0]
    assert [line.split(" | ")[1] for line in lines[2:]] == ["jpeg", "both", "dominated", "weak"]
    assert lines[2].startswith("| ★ | jpeg | — | 85.0 | 40.0 | 40.0 | 0.0 | 30.0 |")
    assert lines[4].startswith("|  | dominated | 80/120 | 55.0 |")
    assert [line.startswith("| ★ |") for line in lines[2:]] == [True, False, False, False]
    with pytest.raises(KeyError, match="no result for attack 'cw'"):
        frontier_table(results, attack="cw")
    with pytest.raises(ValueError, match="one classifier"):
        frontier_table([results[0], dataclasses.replace(results[1], num_images=7)])


def test_seed_means_average_each_row_over_seeds(undefended):
    def row(name: str, clean: float, mean: float, psnr: float | None) -> EvaluationResult:
        return dataclasses.replace(undefended, defence=name, defended_accuracy=clean, psnr=psnr,
                                   mean={"grey-box": mean}, worst_case={"grey-box": mean / 2})  # fmt: skip

    white = dataclasses.replace(undefended, defence="p", threats=["white-box"], mean={"white-box": 0.0})
    by_seed = {0: [row("none", 0.9, 0.1, None), row("p", 0.8, 0.6, 27.0), white],
               3: [row("p", 0.7, 0.5, 26.0), row("none", 0.9, 0.2, None)]}  # fmt: skip
    means = {entry["defence"]: entry for entry in seed_means(by_seed)}
    assert list(means) == ["none", "p"]  # the first seed's order; the white-box row is left out
    assert means["p"]["clean"] == {"per_seed": [0.8, 0.7], "mean": pytest.approx(0.75)}
    assert means["p"]["worst"]["mean"] == pytest.approx(0.275) and means["none"]["mean"]["mean"] == pytest.approx(0.15)
    assert means["none"]["psnr"] == {"per_seed": [None, None], "mean": None}
    lines = seed_means_table(by_seed).splitlines()
    assert "| clean through defence | seeds 0 / 3 |" in lines[0]
    first = f"| {undefended.classifier} | none | — | {undefended.num_images} |"
    assert lines[2] == first + " 90.0 | 90.0 / 90.0 | 15.0 | 10.0 / 20.0 | 7.5 | 5.0 / 10.0 | — | — |"
    assert lines[3].endswith("| 75.0 | 80.0 / 70.0 | 55.0 | 60.0 / 50.0 | 27.5 | 30.0 / 25.0 | 26.5 | 27.0 / 26.0 |")
    with pytest.raises(ValueError, match="seeds 0 and 3 evaluated different rows"):
        seed_means({0: by_seed[0], 3: by_seed[3][:1]})
    with pytest.raises(ValueError, match="two grey-box rows"):
        seed_means({0: [row("p", 0.8, 0.6, 27.0)] * 2})


def test_choose_by_seed_means_lets_rows_within_the_margin_compete_on_robustness():
    def row(name: str, clean: float, mean: float, noise_t: tuple[int, int] | None = (80, 120)) -> dict:
        return {"defence": name, "noise_t": noise_t, "clean": {"mean": clean}, "mean": {"mean": mean}}

    rows = [row("none", 0.94, 0.05, None), row("a", 0.843, 0.694), row("b", 0.850, 0.690), row("c", 0.839, 0.70),
            row("jpeg", 0.93, 0.35, None)]  # fmt: skip
    chosen, competing = choose_by_seed_means(rows)  # baselines never compete; c is 1.1 points below b
    assert chosen["defence"] == "a" and [r["defence"] for r in competing] == ["b", "a"]
    assert choice_reason(chosen, competing) == ("b is within 1 point of the highest clean accuracy of the purifiers "
                                                "and a has the highest grey-box mean of them")
    assert choice_reason(*choose_by_seed_means(rows[2:3])) == ("it has the highest clean accuracy of the purifiers, "
                                                                "by more than 1 point")
    assert "within 2 points" in choice_reason(*choose_by_seed_means(rows, margin=0.02), margin=0.02)
    assert choose_by_seed_means(rows, margin=0.02)[0]["defence"] == "c"
    assert choose_by_seed_means(rows, margin=0.0)[0]["defence"] == "b"
    with pytest.raises(ValueError, match="no purifier rows"):
        choose_by_seed_means([rows[0], rows[-1]])
    with pytest.raises(ValueError, match="fraction"):
        choose_by_seed_means(rows, margin=1.0)


def test_stochastic_defence_uses_eot_common_noise_and_seeds(model, data):
    kwargs = {"attacks": ["pgd"], "threat": "white-box", "eot_samples": 2, "keep_examples": 2, **FAST}
    noisy, data = GaussianNoise(), (data[0][:16], data[1][:16])
    first = evaluate(model, data, noisy, seed=3, **kwargs)
    assert first.stochastic_defence and first.eot_samples == 2
    # P(x) and P(x_adv) share their noise, so the residual is the perturbation alone (noise ~0.05 * 4 sd).
    assert first.attacks[0].residual_linf == pytest.approx(EPS, abs=0.5 / 255)
    again = evaluate(model, data, noisy, seed=3, **kwargs)
    other = evaluate(model, data, noisy, seed=4, **kwargs)
    timing = ("images_per_second", "classifier_images_per_second", "peak_memory_mb")
    stable = {k: v for k, v in first.to_dict().items() if k not in timing}
    stable["attacks"] = [{k: v for k, v in e.items() if k != "seconds"} for e in stable["attacks"]]
    repeat = {k: v for k, v in again.to_dict().items() if k not in timing}
    repeat["attacks"] = [{k: v for k, v in e.items() if k != "seconds"} for e in repeat["attacks"]]
    assert stable == repeat
    example = "white-box/pgd"
    assert torch.equal(first.examples[example]["adversarial"], again.examples[example]["adversarial"])
    assert not torch.equal(first.examples[example]["adversarial"], other.examples[example]["adversarial"])


class HeavyNoise(nn.Module):
    """A constructed stochastic defence noisy enough that some images flip from draw to draw."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images + 0.25 * torch.randn_like(images)).clamp(0, 1)


def test_resubmission_counts_images_that_survive_every_draw(model, data):
    kwargs = {"attacks": ["fgsm"], "threat": "white-box", "eot_samples": 1, **FAST}
    single = evaluate(model, data, HeavyNoise(), **kwargs)
    assert single.resubmissions == 0 and single.attacks[0].robust_every_draw is None
    few = evaluate(model, data, HeavyNoise(), resubmissions=2, **kwargs)
    many = evaluate(model, data, HeavyNoise(), resubmissions=12, **kwargs)
    one_draw = many.attacks[0].robust_accuracy
    assert one_draw == few.attacks[0].robust_accuracy == single.attacks[0].robust_accuracy  # scored draw unchanged
    assert many.attacks[0].robust_every_draw <= few.attacks[0].robust_every_draw <= one_draw
    assert many.attacks[0].robust_every_draw < one_draw  # the defence's randomness lets some images through
    assert "every one of 13 independent purification draws" in many.to_markdown()
    deterministic = evaluate(model, data, Recording(), resubmissions=4, **kwargs)
    assert deterministic.resubmissions == 0 and deterministic.attacks[0].robust_every_draw is None
    with pytest.raises(ValueError, match="resubmissions must be an integer >= 0"):
        evaluate(model, data, HeavyNoise(), resubmissions=-1, **kwargs)


def test_white_box_through_a_purifier_and_state_restored(model, data):
    purifier = Purifier(PurifierConfig.preset("tiny"))
    model.train()
    purifier.train()
    running_mean = model.bn1.running_mean.clone()
    rng = torch.get_rng_state()
    try:
        result = evaluate(model, (data[0][:8], data[1][:8]), purifier, attacks=["pgd"], threat="white-box",
                          steps=2, eot_samples=2, batch_size=8, device="cpu", progress=False)  # fmt: skip
    finally:
        flags = [m.training for m in model.modules()] + [m.training for m in purifier.modules()]
        model.eval()
    assert all(flags)  # every module's mode is restored
    assert torch.equal(model.bn1.running_mean, running_mean)  # evaluated in eval mode
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is untouched
    assert result.stochastic_defence and result.eot_samples == 2 and result.defence == "Purifier"
    nominal = [purifier.config.image_noise_t, purifier.config.feature_noise_t]
    assert result.noise_t == nominal and f"noise t {nominal[0]}/{nominal[1]}" in result.to_markdown()
    entry = result.attacks[0]
    assert entry.perturbation_linf <= EPS + 1e-6 and 0 < entry.residual_linf < 1
    # x and x_adv are purified with the same noise: an attack that cannot move the image leaves every
    # correctly classified image correct, so the robust accuracy is the defended accuracy exactly.
    still = evaluate(model.eval(), (data[0][:8], data[1][:8]), purifier, attacks=["pgd"], threat="white-box",
                     eps=1e-7, steps=2, eot_samples=2, batch_size=8, device="cpu", progress=False)
    assert still.defended_accuracy > 0 and still.attacks[0].robust_accuracy == still.defended_accuracy
    halved = evaluate(model, (data[0][:4], data[1][:4]), purifier.set_strength(0.5), attacks=["fgsm"],
                      threat="grey-box", batch_size=4, device="cpu", progress=False)
    assert halved.noise_t == [round(t / 2) for t in nominal]  # the strength it ran at, not the nominal one
    assert EvaluationResult.from_dict(halved.to_dict()).noise_t == halved.noise_t


def test_reports_json_markdown_grid_chart(undefended, tmp_path, monkeypatch):
    paths = undefended.save(tmp_path / "out", grid=True)
    loaded = EvaluationResult.load_json(paths["json"])
    assert loaded.to_dict() == json.loads(paths["json"].read_text()) == undefended.to_dict()
    assert loaded.robust_accuracy("pgd", "white-box") == undefended.robust_accuracy("pgd", "white-box")
    markdown = paths["markdown"].read_text()
    pgd = undefended.attacks[1]
    row = f"| pgd | {100 * pgd.robust_accuracy:.1f} | {pgd.residual_linf * 255:.2f} | {pgd.residual_l2:.3f} |"
    assert row in markdown
    assert f"| {100 * undefended.clean_accuracy:.1f} | {100 * undefended.defended_accuracy:.1f} | — |" in markdown
    with Image.open(paths["grid"]) as grid:
        assert grid.size == ((4 * 34 + 2) * 4, (4 * 34 + 2) * 4)  # 4 examples x 4 rows of 32 px, upscaled 4x
    table = summary_table([undefended, undefended])
    assert table.count("| CifarResNet | none | grey-box | 32 |") == 2 and "| white-box |" in table
    assert table.splitlines()[0].endswith("| images/s (defended) | images/s (classifier) |")
    assert table.splitlines()[2].endswith(
        f"| {undefended.images_per_second:.0f} | {undefended.classifier_images_per_second:.0f} |")
    with pytest.raises(ValueError, match="keep_examples"):
        EvaluationResult.from_dict(undefended.to_dict()).save_grid(tmp_path / "g.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="impure\\[plots\\]"):
        undefended.save_bar_chart(tmp_path / "chart.png")


def test_data_sources(paths, data, tmp_path, monkeypatch):
    images, labels = load_data(paths["data"], limit=10)[:2]
    assert torch.equal(images, data[0][:10]) and torch.equal(labels, data[1][:10])
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for name in classes:
        (tmp_path / "folder" / name).mkdir(parents=True)
    pixels = (data[0][:12] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for index, (image, label) in enumerate(zip(pixels, data[1][:12].tolist(), strict=True)):
        Image.fromarray(image).save(tmp_path / "folder" / classes[label] / f"{index:02d}.png")
    folder_images, folder_labels, _ = load_data(tmp_path / "folder")
    order = sorted(range(12), key=lambda i: (data[1][i].item(), i))  # class folders, then file names
    assert torch.equal(folder_labels, data[1][order])
    torch.testing.assert_close(folder_images, data[0][order], atol=0, rtol=0)  # PNG is lossless
    (tmp_path / "flat").mkdir()
    Image.fromarray(pixels[0]).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="unlabelled"):
        load_data(tmp_path / "flat")
    with pytest.raises(FileNotFoundError, match="torchvision dataset name"):
        load_data(tmp_path / "missing.npz")

    class Offline:
        def __init__(self, root, download, train):
            if download:
                raise urllib.error.URLError("no network")
            raise RuntimeError("Dataset not found")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", Offline)
    with pytest.raises(OSError, match="could not download the torchvision dataset 'cifar10'.*without network"):
        load_data("cifar10", data_root=tmp_path / "cache")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is deprecated, still supported
def test_classifier_and_purifier_sources(paths, model, data, tmp_path):
    assert isinstance(resolve_classifier(paths["weights"])[0], CifarResNet)
    named, name = resolve_classifier("cifar_resnet20", weights=paths["weights"])
    with torch.no_grad():
        torch.testing.assert_close(named(data[0][:4]), model(data[0][:4]))
    traced = torch.jit.trace(model, data[0][:2])
    traced.save(str(tmp_path / "resnet20.pt"))
    loaded, name = resolve_classifier(tmp_path / "resnet20.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(data[0][:4]), model(data[0][:4]))
    assert name == "resnet20.pt"
    assert isinstance(resolve_classifier("impure.classifiers:cifar_resnet20")[0], CifarResNet)
    with pytest.raises(ValueError, match="needs its trained weights"):
        resolve_classifier("cifar_resnet20")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        resolve_classifier("no_such_module:build")
    with pytest.raises(ValueError, match="unknown classifier 'resnet9000'.*--classifier-weights.*module:callable"):
        resolve_classifier("resnet9000")
    # a missing file is reported as one, whether it is the classifier or its weights
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.pt"):
        resolve_classifier(str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="no such file: .*r56.safetensors .the weights of classifier"):
        resolve_classifier("cifar_resnet56", tmp_path / "r56.safetensors")
    # ImageNet zoo models with a local state dict (no download): the wrapper adds their normalisation.
    import timm
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    zoo, _ = resolve_classifier("torchvision:resnet18", weights=tmp_path / "resnet18.pth")
    assert zoo(data[0][:2]).shape == (2, 1000) and zoo.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "resnet10t.pth")
    zoo, _ = resolve_classifier("timm:resnet10t", weights=tmp_path / "resnet10t.pth")
    assert zoo(data[0][:2]).shape == (2, 1000)
    with pytest.raises(ValueError, match="torchvision has no model 'resnet9000'"):
        resolve_classifier("torchvision:resnet9000")
    assert resolve_purifier(None) == (None, "none") and resolve_purifier("none") == (None, "none")
    defence, name = resolve_purifier("JPEG60")
    assert isinstance(defence, JPEG) and defence.quality == 60 and name == "jpeg60"
    with pytest.raises(FileNotFoundError):
        resolve_purifier(str(tmp_path / "no-such-purifier"))


def test_every_named_attack_runs_with_its_settings(model, data):
    result = evaluate(model, (data[0][:4], data[1][:4]), None, attacks=list_attacks(), threat="grey-box",
                      steps=1, batch_size=4, device="cpu", progress=False)  # fmt: skip
    assert [e.attack for e in result.attacks] == list_attacks()
    assert all(e.perturbation_linf <= EPS + 1e-6 for e in result.attacks)
    settings = result.settings["attacks"]
    assert settings["pgd"] == {"eps": EPS, "alpha": EPS / 4, "steps": 1, "random_start": True}
    assert settings["mdi2fgsm"]["decay"] == 1.0 and settings["difgsm"]["decay"] == 0.0
    assert settings["apgd-dlr"]["loss"] == "dlr" and settings["cw"]["kappa"] == 40.0
    assert attack_settings("deepfool", EPS)["steps"] == 50 and attack_settings("fgsm", EPS, steps=3) == {"eps": EPS}
    with pytest.raises(ValueError, match="PGD has no setting\\(s\\) \\['beta'\\]"):
        attack_settings("pgd", EPS, beta=1)


def test_argument_errors(model, data):
    with pytest.raises(ValueError, match="unknown attack 'pgd2'"):
        evaluate(model, data, attacks=["pgd2"])
    with pytest.raises(ValueError, match="unknown threat model 'black-box'"):
        evaluate(model, data, threat="black-box")
    with pytest.raises(ValueError, match="pixel scale"):
        evaluate(model, data, eps=8)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        evaluate(model, data, batch_size=0)
    with pytest.raises(ValueError, match="not evaluated: \\['cw'\\]"):
        evaluate(model, data, attacks=["pgd"], attack_options={"cw": {"steps": 3}})
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps("0.5") == 0.5


def test_cli_end_to_end(paths, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", "--classifier", str(paths["weights"]), "--data", str(paths["data"]), "--purifier",
            "jpeg75", "--attacks", "fgsm", "--limit", "16", "--eps", "8/255", "--device", "cpu", "-o",
            str(out), "--grid", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "result.json").read_text())
    assert report["num_images"] == 16 and report["defence"] == "jpeg75"
    assert [(e["attack"], e["threat"]) for e in report["attacks"]] == [("fgsm", "grey-box"), ("fgsm", "white-box")]
    assert "| fgsm |" in printed and (out / "result.md").read_text() in printed
    assert (out / "grid.png").is_file()
    assert main(argv) == 1
    assert "pass --force" in capsys.readouterr().err
    assert main([*argv[:-2], "--force", "--no-progress", "--threat", "grey-box"]) == 0
    assert [e["threat"] for e in json.loads((out / "result.json").read_text())["attacks"]] == ["grey-box"]


def test_settings_group_the_options_and_keywords_override_them(model, data):
    from impure.evaluation import EvaluationSettings

    settings = EvaluationSettings(attacks=["fgsm"], threat="grey-box", eps=EPS, limit=4, progress=False)
    images = (data[0][:8], data[1][:8])
    grouped = evaluate(model, images, None, settings, device="cpu")
    keywords = evaluate(model, images, None, attacks=["fgsm"], threat="grey-box", eps=EPS, limit=4,
                        progress=False, device="cpu")
    assert grouped.num_images == keywords.num_images == 4 and grouped.settings == keywords.settings
    assert [a.robust_accuracy for a in grouped.attacks] == [a.robust_accuracy for a in keywords.attacks]
    assert evaluate(model, images, None, settings, limit=2, device="cpu").num_images == 2  # a keyword overrides
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['epsilon'\]"):
        evaluate(model, images, None, settings, epsilon=0.1)


class Rounding(nn.Module):
    """A constructed gradient-masking defence: rounding to 8 grey levels has zero gradient everywhere."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.round(images * 7) / 7


def test_adaptive_protocol_flags_masked_gradients_and_passes_an_honest_defence(model, data, tmp_path):
    from impure.evaluation import AdaptiveReport, adaptive_evaluation

    kwargs = {"attacks": ["pgd"], "steps": {"pgd": 5}, "convergence_steps": (2, 5), "convergence_eot": (1, 2),
              "eot_samples": 2, "resubmissions": 2, "limit": 16, "batch_size": 16, "device": "cpu",
              "progress": False}
    honest = adaptive_evaluation(model, data, Recording(), **kwargs)
    assert honest.passed, honest.checks
    assert [c.name for c in honest.checks] == ["white-box <= grey-box (pgd)", "~0 at ε = 32/255 (pgd, white-box)"]
    assert honest.high_eps.attacks[0].robust_accuracy <= 0.05
    masked = adaptive_evaluation(model, data, Rounding(), **kwargs)
    assert not masked.passed and not any(c.passed for c in masked.checks)
    assert "**FAILED**: white-box <= grey-box (pgd)" in masked.to_markdown()
    assert "the gradients through the defence look masked" in masked.to_markdown()
    # The curves: steps 2 and 5 at one draw, then draws 1 and 2 at 5 steps (the shared point once).
    assert [(p.steps, p.eot_samples) for p in honest.convergence] == [(2, 1), (5, 1)]  # deterministic: EOT 1
    noisy = adaptive_evaluation(model, data, HeavyNoise(), high_eps=None, **kwargs)
    assert [(p.steps, p.eot_samples) for p in noisy.convergence] == [(2, 1), (5, 1), (5, 2)]
    assert all(p.robust_every_draw <= p.robust_accuracy for p in noisy.convergence)
    assert noisy.main.resubmissions == 2 and noisy.main.attacks[0].robust_every_draw is not None
    paths = noisy.save(tmp_path / "adaptive")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = AdaptiveReport.load_json(paths["json"])
    assert again.to_markdown() == noisy.to_markdown()


def test_per_image_outcomes_add_up_to_the_reported_numbers(model, data):
    result = evaluate(model, data, JPEG(75), attacks=["fgsm"], threat="both", **FAST)
    outcome = result.per_image
    labels = outcome["labels"]
    assert float((outcome["clean_prediction"] == labels).float().mean()) == result.clean_accuracy
    defended = outcome["defended_prediction"] == labels
    assert float(defended.float().mean()) == result.defended_accuracy
    for threat in ("grey-box", "white-box"):
        robust = (outcome[f"{threat}/fgsm/prediction"] == labels) & defended
        assert float(robust.float().mean()) == result.robust_accuracy("fgsm", threat)
        assert float(outcome[f"{threat}/fgsm/perturbation_linf"].max()) == pytest.approx(EPS, abs=1e-6)
    # White-box attacks only the images the defence gets right: the others keep a zero perturbation.
    assert torch.all(outcome["white-box/fgsm/perturbation_linf"][~defended] == 0)
    assert "per_image" not in result.to_dict()
