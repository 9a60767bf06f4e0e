"""The robustness and frontier benchmarks: their options, and short end-to-end runs on the shared data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from impure import Purifier, PurifierConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared helpers as `_common`
    import _common
    import frontier
    import robustness

    return SimpleNamespace(common=_common, frontier=frontier, robustness=robustness)


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "tiny"
    Purifier(PurifierConfig.preset("tiny")).save_pretrained(folder)
    return folder


def test_purifier_options_qualify_the_purifier_before_them(bench, tmp_path):
    spec = bench.common.DefenceSpec
    run = tmp_path / "run-a" / "model"  # a Trainer's output: labelled by the run's folder
    run.mkdir(parents=True)
    args = bench.robustness.parse_args([
        "--strengths", "1", "--defences", "none,JPEG75", "--purifier", str(run), "--strength", "0.5,3/4",
        "--purifier", "impure/cifar10-s", "--label", "bundled", "--attacks", "cheap,bim", "--threat", "both",
    ])  # fmt: skip
    assert bench.common.defence_specs(args) == [
        spec("none", "none"), spec("JPEG75", "jpeg75"), spec(str(run), "run-a s=0.5", 0.5),
        spec(str(run), "run-a s=0.75", 0.75), spec("impure/cifar10-s", "bundled s=1", 1.0),
    ]  # fmt: skip
    assert args.attacks == ["fgsm", "pgd", "mifgsm", "apgd-dlr", "bim"] and args.threat == ("grey-box", "white-box")
    assert bench.robustness.parse_args([]).attacks == [
        "fgsm", "pgd", "mifgsm", "difgsm", "mdi2fgsm", "apgd-ce", "apgd-dlr", "cw", "deepfool"]  # fmt: skip
    twice = bench.frontier.parse_args(["--purifier", str(run), "--purifier", str(run)])
    with pytest.raises(ValueError, match="labelled \\['run-a'\\]; give each --purifier its own --label"):
        bench.common.defence_specs(twice)
    with pytest.raises(ValueError, match="jpeg75 is a baseline"):
        bench.common.load_defence(spec("jpeg75", "jpeg75", 0.5))


def test_noise_timesteps_label_the_rows_absolutely(bench, tiny):
    spec = bench.common.DefenceSpec
    args = bench.frontier.parse_args(["--noise-t", "80/120", "--purifier", str(tiny), "--purifier", "impure/cifar10",
                                      "--label", "bundled", "--noise-t", "40/60,120/180"])
    assert bench.common.defence_specs(args)[-3:] == [
        spec(str(tiny), "tiny t=80/120", noise_t=(80, 120)),
        spec("impure/cifar10", "bundled t=40/60", noise_t=(40, 60)),
        spec("impure/cifar10", "bundled t=120/180", noise_t=(120, 180))]  # fmt: skip
    assert bench.common.load_defence(spec(str(tiny), "x", noise_t=(80, 120))).noise_t == (80, 120)
    assert spec(str(tiny), "x", noise_t=(80, 120)).to_dict()["noise_t"] == (80, 120)
    both = bench.frontier.parse_args(["--purifier", str(tiny), "--noise-t", "80/120", "--strengths", "1"])
    with pytest.raises(ValueError, match="give --strengths or --noise-t, not both"):
        bench.common.defence_specs(both)


@pytest.mark.parametrize("argv", [["--label", "x"], ["--purifier", "p", "--strengths", "0,1"],
                                  ["--purifier", "p", "--noise-t", "80"], ["--noise-t", "80/x"],
                                  ["--attacks", "pgd,nope"], ["--threat", "black-box"],
                                  ["--white-box-limit", "0"], ["--seeds", "1,1"], ["--seeds", "a"],
                                  ["--seed", "1", "--seeds", "2,3"]])  # fmt: skip
def test_bad_options_are_usage_errors(bench, argv, capsys):
    with pytest.raises(SystemExit):
        bench.robustness.parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_missing_shared_data_is_reported(bench, tmp_path, capsys):
    assert bench.frontier.main(["--shared", str(tmp_path)]) == 2
    assert "pass --shared DIR" in capsys.readouterr().err


def test_frontier_end_to_end(bench, shared_dir, tiny, tmp_path, capsys):
    out = tmp_path / "frontier"
    argv = ["--shared", str(shared_dir), "--limit", "8", "--steps", "2", "--device", "cpu", "--no-progress",
            "--classifier", "cifar_resnet20", "--defences", "none,jpeg75", "--attacks", "fgsm",
            "--purifier", str(tiny), "--strengths", "0.5,1", "--out", str(out)]  # fmt: skip
    assert bench.frontier.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "frontier.json").read_text())
    assert report["defences"][2] == {"source": str(tiny), "label": "tiny s=0.5", "strength": 0.5}
    rows = {r["defence"]: r for r in report["results"]}
    assert list(rows) == ["none", "jpeg75", "tiny s=0.5", "tiny s=1"]
    assert all(r["num_images"] == 8 and [a["attack"] for a in r["attacks"]] == ["fgsm", "pgd"] for r in rows.values())
    assert rows["tiny s=0.5"]["psnr"] != rows["tiny s=1"]["psnr"]  # each row at its own strength
    nominal = rows["tiny s=1"]["noise_t"]
    assert rows["tiny s=0.5"]["noise_t"] == [round(t / 2) for t in nominal] and rows["jpeg75"]["noise_t"] is None
    table = (out / "frontier.md").read_text()
    assert table in printed and "| PGD-2 grey-box |" in table
    # Sorted by clean accuracy through the defence: the bare classifier's 100 % here is the frontier's top.
    assert table.splitlines()[-4].startswith("| ★ | none | — | 100.0 |")
    assert f"| tiny s=1 | {nominal[0]}/{nominal[1]} |" in table


def test_seeds_run_once_per_seed_and_write_their_means(bench, shared_dir, tiny, tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = ["--shared", str(shared_dir), "--limit", "6", "--steps", "1", "--device", "cpu", "--no-progress",
            "--classifier", "cifar_resnet20", "--defences", "none", "--attacks", "fgsm", "--purifier", str(tiny),
            "--label", "t", "--seeds", "3,4", "--out", str(out)]  # fmt: skip
    assert bench.frontier.main(argv) == 0
    printed = capsys.readouterr().out
    runs = {seed: json.loads((folder / "frontier.json").read_text())["results"]
            for seed, folder in ((3, out), (4, out / "seed4"))}  # fmt: skip
    assert {seed: {r["seed"] for r in results} for seed, results in runs.items()} == {3: {3}, 4: {4}}
    means = json.loads((out / "seed-means.json").read_text())
    assert means["seeds"] == [3, 4] and [row["defence"] for row in means["rows"]] == ["none", "t"]
    purified = means["rows"][1]
    assert purified["clean"]["per_seed"] == [runs[seed][1]["defended_accuracy"] for seed in (3, 4)]
    assert purified["psnr"]["mean"] == pytest.approx((runs[3][1]["psnr"] + runs[4][1]["psnr"]) / 2)
    assert runs[3][1]["psnr"] != runs[4][1]["psnr"]  # each seed is another draw of the purifier's noise
    table = (out / "seed-means.md").read_text()
    assert table in printed and "seed4/" in table and "| seeds 3 / 4 |" in table
    # One purifier: the rule picks it, and says so.
    assert means["chosen"] == "t" and "t is chosen: it has the highest clean accuracy of the purifiers" in table


def test_robustness_end_to_end(bench, shared_dir, tiny, tmp_path, capsys):
    out = tmp_path / "robustness"
    argv = ["--shared", str(shared_dir), "--limit", "8", "--white-box-limit", "4", "--steps", "2",
            "--eot-samples", "2", "--device", "cpu", "--no-progress", "--classifiers", "cifar_resnet20",
            "--defences", "none,bits4", "--attacks", "fgsm", "--white-box-attacks", "pgd",
            "--purifier", str(tiny), "--label", "t", "--out", str(out)]  # fmt: skip
    assert bench.robustness.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "robustness.json").read_text())["results"]
    rows = [(r["defence"], r["threats"], r["num_images"], [a["attack"] for a in r["attacks"]]) for r in results]
    assert rows == [
        ("none", ["grey-box"], 8, ["fgsm"]), ("bits4", ["grey-box"], 8, ["fgsm"]),
        ("bits4", ["white-box", "bpda"], 4, ["pgd", "pgd"]), ("t", ["grey-box"], 8, ["fgsm"]),
        ("t", ["white-box", "bpda"], 4, ["pgd", "pgd"]),
    ]  # fmt: skip
    assert results[-1]["stochastic_defence"] and results[-1]["eot_samples"] == 2
    table = (out / "robustness.md").read_text()
    assert table in printed and "| cifar_resnet20 | t | bpda | 4 |" in table


def test_start_reports_on_a_later_slice_of_the_test_images(bench, shared_dir, capsys):
    from impure.classifiers import load_classifier
    from impure.data import load_npz

    args = bench.frontier.parse_args(["--shared", str(shared_dir), "--start", "490", "--steps", "1",
                                      "--device", "cpu", "--no-progress"])
    data = shared_dir / "data" / "cifar10" / "test_dev.npz"
    result = bench.common.evaluate_defence(args, data, "cifar_resnet20", bench.common.DefenceSpec("none", "none"),
                                           None, attacks=["fgsm"], threat="grey-box", limit=None, cache={})
    images, labels = load_npz(data)
    classifier = load_classifier("cifar_resnet20", shared_dir / "models" / "cifar10_resnet20.safetensors").eval()
    with torch.no_grad():
        expected = (classifier(images[490:]).argmax(1) == labels[490:]).float().mean().item()
    assert result.num_images == 10 and result.clean_accuracy == pytest.approx(expected)


def test_training_curve_concatenates_runs_by_images_seen(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib", reason="the curve's PNG needs matplotlib (the plots extra)")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import training_curve

    runs = []
    for name, batch, records in (("a", 32, [(100, 0.5), (200, 0.6)]), ("b", 64, [(50, 0.7)])):
        run = tmp_path / name
        run.mkdir()
        (run / "train_config.json").write_text(json.dumps({"optim": {"batch_size": batch, "grad_accum": 1}}))
        lines = [{"step": s, "val/accuracy": a, "val_adv/accuracy": a - 0.1, "val/psnr": 25.0} for s, a in records]
        if name == "b":  # a robust stage also validates white-box
            lines[-1]["val_white/accuracy"] = 0.05
        lines.insert(0, {"step": 10, "total": 1.0})
        (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (run / "model").mkdir()  # the noise timesteps it was validated at
        (run / "model" / "config.json").write_text(json.dumps({"image_noise_t": batch, "feature_noise_t": 30}))
        runs.append(str(run))
    out = tmp_path / "curve"
    assert training_curve.main([*runs, "--offset", "1000", "--out", str(out)]) == 0
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert [p["images"] for p in points] == [1000 + 3200, 1000 + 6400, 1000 + 6400 + 3200]
    assert [p.get("val_white/accuracy") for p in points] == [None, None, 0.05]
    assert [p["noise_t"] for p in points] == [[32, 30], [32, 30], [64, 30]]
    # A later stretch whose earlier run folders are gone continues the committed curve.
    later = tmp_path / "later"
    assert training_curve.main([runs[1], "--continue-from", str(out.with_suffix(".json")), "--out", str(later)]) == 0
    continued = json.loads(later.with_suffix(".json").read_text())["points"]
    assert continued[:3] == points and continued[3]["images"] == points[-1]["images"] + 3200
    assert "lost_images" not in json.loads(later.with_suffix(".json").read_text())
    # A stretch in between whose log was lost moves the later points by its images, and the JSON says so.
    gap = tmp_path / "gap"
    assert training_curve.main([runs[1], "--continue-from", str(later.with_suffix(".json")), "--lost-images", "640",
                                "--out", str(gap)]) == 0
    bridged = json.loads(gap.with_suffix(".json").read_text())
    assert bridged["points"][4]["images"] == continued[3]["images"] + 640 + 3200 and bridged["lost_images"] == 640
    assert out.with_suffix(".png").stat().st_size > 1000


def test_adaptive_benchmark_end_to_end(monkeypatch, shared_dir, tiny, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import adaptive

    out = tmp_path / "adaptive"
    code = adaptive.main(["--purifier", str(tiny), "--label", "tiny/one", "--shared", str(shared_dir),
                          "--classifier", "cifar_resnet20", "--start", "250", "--limit", "6",
                          "--convergence-limit", "3", "--pgd-steps", "2", "--apgd-steps", "2",
                          "--convergence-steps", "1,2", "--convergence-eot", "1,2", "--eot-samples", "2",
                          "--resubmissions", "2", "--no-progress", "--out", str(out)])
    assert code == 0
    report = adaptive.AdaptiveReport.load_json(out / "tiny_one" / "adaptive.json")
    assert report.main.num_images == 6 and report.high_eps.num_images == 3 and report.main.defence == "tiny/one"
    assert [(p.steps, p.eot_samples) for p in report.convergence] == [(1, 1), (2, 1), (2, 2)]
    assert (out / "tiny_one" / "convergence.png").is_file()
    text = (out / "summary.md").read_text()
    assert "| tiny/one |" in text and "test_dev images 250-255" in text and "3 independent purifications" in text


def test_frontier_plot_groups_each_purifier_over_its_strengths(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import frontier_plot

    rows = [{"defence": label, "noise_t": noise_t, "clean": {"mean": clean}, "mean": {"mean": mean}}
            for label, noise_t, clean, mean in (("none", None, 0.94, 0.05), ("A s=1", [80, 120], 0.84, 0.70),
                                                ("A s=0.5", [40, 60], 0.86, 0.65), ("B s=1", [80, 120], 0.88, 0.69))]
    (tmp_path / "seed-means.json").write_text(json.dumps({"rows": rows}))
    lines = frontier_plot.points([tmp_path / "seed-means.json"], " s=")
    assert lines["A"] == [(84.0, 70.0, "t 80/120"), (86.0, 65.0, "t 40/60")]
    assert lines["none"] == [(94.0, 5.0, "")] and len(lines["B"]) == 1
    assert frontier_plot.main([str(tmp_path / "seed-means.json"), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert frontier_plot.main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "g.png")]) == 2


def test_purifier_cost_in_units_of_the_classifier(monkeypatch, shared_dir, tiny, tmp_path, capsys):
    """purifier_speed.py --against: both backbones timed beside the classifier in one process, a record naming
    the CPU."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import purifier_speed

    conv = tmp_path / "conv"
    Purifier(PurifierConfig.preset("tiny-conv")).save_pretrained(conv)
    argv = ["purifier_speed.py", "--against", "cifar_resnet20", "--purifier", str(tiny), "--purifier", str(conv),
            "--threads", "1", "--rounds", "1", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    purifier_speed.main()
    record = json.loads((tmp_path / "purifier-cost.json").read_text())
    assert [row["model"] for row in record["rows"]] == ["cifar_resnet20", str(tiny), str(conv)]
    assert record["rows"][0]["cost"] == 1.0 and all(row["images_per_s"] > 0 for row in record["rows"])
    assert record["cpu"] in capsys.readouterr().out


def test_tiling_speed_compares_the_old_and_the_new_tiling_in_one_run(monkeypatch, shared_dir, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import tiling_speed

    assert tiling_speed.main(["--size", "70x40", "--threads", "1", "--rounds", "1", "--out", str(tmp_path)]) == 0
    before, now = json.loads((tmp_path / "tiling-speed.json").read_text())["rows"]
    assert before["purifications_per_pixel"] > 2 * now["purifications_per_pixel"]
    assert all(row["images_per_s"] > 0 and row["megapixels_per_minute"] > 0 for row in (before, now))
