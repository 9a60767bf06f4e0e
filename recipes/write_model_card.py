"""Write the model cards of the bundled purifiers and the README's (and docs') tables of them from the
committed benchmark results, so that no number a user reads is typed by hand.

    python recipes/write_model_card.py [--check]

Every card is made by `impure.cards.model_card` (the card `save_pretrained` writes): Hub metadata with
`model-index`, architecture, usage, training recipe, the measured table with its protocol. Reads
src/impure/weights/<name>/{config.json,card.json} and benchmarks/results/:
- robustness-cifar10-report: grey-box, the nine attacks, ResNet-56, test_dev images 250-499 (reported split);
- robustness-cifar10-report/*seed*: the report repeated with noise seeds 1 and 2, and the replaced release's;
- recipes/candidates/*/record.json: each candidate's facts (stretch, parent, label, noise t, command, log,
  scheduled steps, images seen, the selection runs that judged it); the one that src/impure/weights/cifar10's
  card.json names as its source says "bundled_as" and which release it "replaces", and the lineage between
  them gives the steps trained since (from the committed logs, or the schedule where a log was lost);
- campaign-cifar10/selection-stretch*/**/frontier.json: every selection run on images 0-249 (selection split),
  found by folder: those with noise seed 0 make the table, all of them the seed means that decide by the
  campaign's rule; a run folder's labels.json renames out-of-date row labels and its finding.md adds a sentence
  about its rows;
- campaign-cifar10/curve.json and robust-cifar10/curve.json: the training curves;
- adaptive-cifar10: the adaptive protocol (white-box EOT-PGD / APGD-CE, resubmission, checks), if present;
- robustness-cifar10-s and robustness-cifar10-s-adaptive: impure/cifar10-s's first measurements.
Writes src/impure/weights/<name>/README.md, the block between the `cifar10-results` markers in README.md and the
one between the `adaptive-results` markers in docs/evaluation.md; `--check` writes nothing and fails (status 1,
naming the files) where one of them differs from what the results give.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from statistics import fmean

from impure._util.atomic import atomic_write
from impure.cards import model_card
from impure.config import PurifierConfig
from impure.evaluation import AdaptiveReport, EvaluationResult, choice_reason, choose_by_seed_means, seed_means
from impure.formatting import format_eps, percent
from impure.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = ROOT / "src" / "impure" / "weights"
RESULTS = ROOT / "benchmarks" / "results"
TITLES = {"fgsm": "FGSM", "pgd": "PGD-10", "mifgsm": "MI-FGSM", "difgsm": "DI-FGSM", "mdi2fgsm": "M-DI²-FGSM",
          "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "cw": "C&W", "deepfool": "DeepFool", "bim": "BIM"}
LABELS = {"none": "no defence", "jpeg75": "JPEG q75"}
REPORT_START = 250  # the reported split: test_dev images 250-499 (settings are chosen on 0-249)
BLOCKS = {"cifar10-results": [ROOT / "README.md"],
          "adaptive-results": [ROOT / "docs" / "evaluation.md"]}  # README.md links to it


def _lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")  # 3e-4


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _bundled(folder: str) -> tuple[PurifierConfig, dict]:
    """The config and the export record (card.json) of bundled weights src/impure/weights/<folder>."""
    return PurifierConfig.from_json(str(WEIGHTS / folder / "config.json")), _json(WEIGHTS / folder / "card.json")


def report_table(results: list[dict]) -> str:
    """Grey-box table: clean through the defence, PSNR, each attack, the mean and the worst attack."""
    attacks = [a["attack"] for a in results[0]["attacks"]]
    titles = " | ".join(TITLES.get(a, a) for a in attacks)
    lines = [f"| defence | clean | PSNR (dB) | {titles} | mean | worst attack |",
             "|---|---:|---:|" + "---:|" * len(attacks) + "---:|---:|"]
    for result in results:
        scores = {a["attack"]: a["robust_accuracy"] for a in result["attacks"]}
        worst = min(scores, key=scores.get)
        name = LABELS.get(result["defence"], f"**{result['defence']}**")
        psnr = "—" if result["psnr"] is None else f"{result['psnr']:.1f}"
        lines.append(f"| {name} | {percent(result['defended_accuracy'])} | {psnr} | "
                     + " | ".join(percent(scores[a]) for a in attacks)
                     + f" | {percent(result['mean']['grey-box'])} | {percent(scores[worst])} ({TITLES[worst]}) |")
    return "\n".join(lines)


def selection_table(results: list[dict]) -> str:
    lines = ["| defence | clean | grey-box mean (FGSM, PGD, MI-FGSM, APGD-DLR) | PSNR (dB) |", "|---|---:|---:|---:|"]
    for result in results:
        psnr = "—" if result["psnr"] is None else f"{result['psnr']:.1f}"
        lines.append(f"| {LABELS.get(result['defence'], result['defence'])} | {percent(result['defended_accuracy'])} "
                     f"| {percent(result['mean']['grey-box'])} | {psnr} |")
    return "\n".join(lines)


CAMPAIGN = RESULTS / "campaign-cifar10"
CANDIDATES = ROOT / "recipes" / "candidates"


def candidate_records() -> dict[str, dict]:
    """Stretch name -> the record of its candidate folder (`recipes/candidates/*/record.json`: lineage, command,
    log, images seen, noise t, the selection runs that judged it), with "folder" added."""
    records = {}
    for path in sorted(CANDIDATES.glob("*/record.json")):
        record = {**_json(path), "folder": path.parent.relative_to(ROOT).as_posix()}
        if record["stretch"] in records:
            raise ValueError(f"two candidate folders record {record['stretch']!r}")
        records[record["stretch"]] = record
    return records


def bundled_record() -> dict:
    """The record of the candidate that src/impure/weights/cifar10 was exported from (its card.json's source),
    which names the release it replaced."""
    source = _json(WEIGHTS / "cifar10" / "card.json")["source"]
    record = next((r for r in candidate_records().values() if r["folder"] == source), None)
    if record is None or record.get("bundled_as") != "impure/cifar10" or not record.get("replaces"):
        raise ValueError(f"impure/cifar10 was exported from {source}, whose record.json must say "
                         '"bundled_as": "impure/cifar10" and which release it "replaces"')
    return record


def since_replaced() -> list[dict]:
    """The records of the stretches that trained the replaced release's weights into the bundled ones, in order
    (the bundled stretch's lineage, back to the release it replaced)."""
    records, bundled = candidate_records(), bundled_record()
    chain, name = [], bundled["stretch"]
    while name != bundled["replaces"]:
        if name not in records:
            raise ValueError(f"{name} is in impure/cifar10's lineage but has no recipes/candidates/*/record.json")
        chain.append(records[name])
        name = records[name]["parent"]
    return chain[::-1]


def _stretch_number(path: Path) -> int:
    folder = next(part for part in path.relative_to(CAMPAIGN).parts if part.startswith("selection-stretch"))
    return int(folder.removeprefix("selection-stretch"))


def selection_runs() -> list[Path]:
    """Every selection run's frontier.json (campaign-cifar10/selection-stretchN/...), newest stretch first and a
    stretch's main run before its sub-runs: adding a stretch's selection folder adds its rows."""
    runs = CAMPAIGN.glob("selection-stretch*/**/frontier.json")
    return sorted(runs, key=lambda path: (-_stretch_number(path), len(path.parts), str(path)))


def _run_seed(path: Path) -> int:
    seeds = {result["seed"] for result in _json(path)["results"]}
    if len(seeds) != 1:
        raise ValueError(f"{path} mixes noise seeds {sorted(seeds)}")
    return seeds.pop()


def selection() -> tuple[list[Path], list[Path]]:
    """The selection runs with noise seed 0 (the table's) and those with other seeds (for the seed means)."""
    seeds = {path: _run_seed(path) for path in selection_runs()}  # each run read once
    return [path for path, seed in seeds.items() if seed == 0], [path for path, seed in seeds.items() if seed != 0]


def run_labels(path: Path) -> dict[str, str]:
    """Row labels that the `labels.json` of a run's folder (or of a folder above it in the results) renames: rows
    whose label no longer says what they were, such as a model id whose weights have changed since."""
    renamed: dict[str, str] = {}
    folder = path.parent
    while RESULTS in folder.parents:
        if (folder / "labels.json").is_file():
            renamed = {**_json(folder / "labels.json"), **renamed}  # the nearer folder wins
        folder = folder.parent
    return renamed


def selection_label(result: dict, defences: list[dict], renamed: dict[str, str]) -> str:
    """A selection row's label with its setting restated as the noise timesteps it ran at ("stretch 9 t=80/120"):
    recorded in the result (`noise_t`), or for runs made before it was recorded, the committed candidate folder's
    nominal t times the row's strength."""
    if result["defence"] in renamed:
        return renamed[result["defence"]]
    spec = next(d for d in defences if d["label"] == result["defence"])
    if spec.get("strength") is None and spec.get("noise_t") is None:
        return result["defence"]
    noise_t = result.get("noise_t")
    if noise_t is None:
        config = ROOT / spec["source"] / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"selection row {result['defence']!r} records no noise t and its purifier "
                                    f"{spec['source']!r} is not a committed folder; rename it in the run's "
                                    "labels.json")
        nominal = PurifierConfig.from_json(str(config))
        noise_t = [round(nominal.image_noise_t * spec["strength"]), round(nominal.feature_noise_t * spec["strength"])]
    base = re.split(r" [st]=", spec["label"])[0]
    return f"{base} t={noise_t[0]}/{noise_t[1]}"


def campaign_selection() -> list[dict]:
    """The rows of the seed-0 selection runs, each defence once (the newest run that has it), by clean accuracy."""
    rows: dict[str, dict] = {}
    for path in selection()[0]:
        run = _json(path)
        for result in run["results"]:
            label = selection_label(result, run["defences"], run_labels(path))
            rows.setdefault(label, {**result, "defence": label})
    return sorted(rows.values(), key=lambda r: -r["defended_accuracy"])


SEEDS = (0, 1, 2)  # the noise seeds of the seed means


def seed_runs() -> dict[str, dict[int, dict]]:
    """Label -> noise seed -> result, for every selection row measured with each of SEEDS."""
    by_label: dict[str, dict[int, dict]] = {}
    for path in selection_runs():
        run = _json(path)
        for result in run["results"]:
            if result["defence"] != "none":
                label = selection_label(result, run["defences"], run_labels(path))
                by_label.setdefault(label, {}).setdefault(result["seed"], result)
    return {label: seeds for label, seeds in by_label.items() if set(SEEDS) <= set(seeds)}


def seed_text(bundled: str) -> str:
    """What the noise seed does to the selection numbers: the mean over seeds of each row that has several, and
    the row that the campaign's rule (`choose_by_seed_means`) picks from those means, which must be `bundled`
    (the bundled weights' row)."""
    runs = seed_runs()
    rows = seed_means({seed: [EvaluationResult.from_dict({**seeds[seed], "defence": label})
                              for label, seeds in runs.items()] for seed in SEEDS})  # fmt: skip
    rows.sort(key=lambda row: -row["clean"]["mean"])
    listed = "; ".join(f"{row['defence']} {percent(row['clean']['mean'])} / {percent(row['mean']['mean'])} %"
                       for row in rows)  # fmt: skip
    seed_folders = ", ".join(f"`{name}/seed*`" for name in dict.fromkeys(path.parts[-3] for path in selection()[1]))
    text = (f"The purifier's noise is random, and one draw moves these numbers by a few points: repeated with noise "
            f"seeds {', '.join(map(str, SEEDS))} on the same images ({seed_folders}), the mean clean / "
            f"grey-box mean accuracies are {listed}.")
    if all(max(s, key=lambda k: s[k]["defended_accuracy"]) == 0 for s in runs.values()):
        text += " Seed 0 (the table's) gave each of them its highest clean accuracy on these images."
    chosen, competing = choose_by_seed_means(rows)
    if chosen["defence"] != bundled:
        raise ValueError(f"by the rule on the seed means {chosen['defence']!r} wins, but the card says {bundled!r} "
                         "is bundled; bundle it or correct the records (recipes/candidates/*/record.json)")
    return text + f" By the campaign's rule on these means, {bundled} is chosen: {choice_reason(chosen, competing)}."


_REPORT = "robustness-cifar10-report"


def report_seeds() -> dict[str, list[tuple[str, str]]]:
    """The report repeated with noise seeds 0, 1, 2: per purifier, (results folder, its row's label); the
    replaced release's report was moved to stretchM-seed0, -seed1, -seed2 when its successor was bundled."""
    bundled = bundled_record()
    replaced = bundled["replaces"]
    return {
        f"impure/cifar10 ({bundled['stretch']})": [(_REPORT, "impure/cifar10"), (f"{_REPORT}/seed1", "impure/cifar10"),
                                                   (f"{_REPORT}/seed2", "impure/cifar10")],
        f"{replaced} (the release it replaces)": [
            (f"{_REPORT}/{replaced.replace(' ', '')}-seed{seed}", "impure/cifar10") for seed in (0, 1, 2)],
    }


def report_seed_text() -> str:
    """The report split's clean accuracy and grey-box mean averaged over the noise seeds of REPORT_SEEDS."""
    parts, means = [], []
    for name, runs in report_seeds().items():
        rows = []
        for folder, label in runs:
            results = _json(RESULTS / folder / "robustness.json")["results"]
            rows.append(next(r for r in results if r["defence"] == label))
        clean, grey = [r["defended_accuracy"] for r in rows], [r["mean"]["grey-box"] for r in rows]
        parts.append(f"{name} {percent(fmean(clean))} % clean ({', '.join(map(percent, clean))} with "
                     f"seeds {', '.join(str(r['seed']) for r in rows)}) and {percent(fmean(grey))} % grey-box mean")
        means.append((fmean(clean), fmean(grey), max(clean) - min(clean), max(grey) - min(grey)))
    (ours_clean, ours_grey, *spread), (old_clean, old_grey, *old_spread) = means
    text = ("Repeated with other noise seeds on the same images (`benchmarks/results/" + _REPORT + "/*seed*`), "
            "the means over three seeds are: " + "; ".join(parts) + f". The new release differs from the one it "
            f"replaces by {100 * (ours_clean - old_clean):+.1f} points of clean accuracy and "
            f"{100 * (ours_grey - old_grey):+.1f} of grey-box mean here")
    level = (abs(ours_clean - old_clean) < min(spread[0], old_spread[0])
             and abs(ours_grey - old_grey) < min(spread[1], old_spread[1]))
    return text + (", less than the noise seed moves either (so the two are level on these images; it was chosen on "
                   "images 0-249 by the campaign's rule)." if level else ".")


def report_protocol(first: dict) -> str:
    return (f"ResNet-56 (never used in training; {percent(first['clean_accuracy'])} % clean alone), grey-box "
            f"(the attacks see the bare classifier), the paper's nine attacks at ℓ∞ ε = 8/255, on test_dev "
            f"images 250-499 ({first['num_images']} images; the strength was chosen on images 0-249), seed "
            f"{first['seed']}, one purification per image. Accuracy in %; *clean* is the accuracy through the "
            f"defence.")


def adaptive_reports() -> dict[str, AdaptiveReport]:
    """label -> report of benchmarks/results/adaptive-cifar10 (empty if not measured)."""
    folder = RESULTS / "adaptive-cifar10"
    if not folder.is_dir():
        return {}
    reports = {}
    for path in sorted(folder.glob("*/adaptive.json")):
        report = AdaptiveReport.load_json(path)
        size = report.main.num_images
        report.main = dataclasses.replace(report.main, data=_report_split(size))
        reports[path.parent.name.replace("_", "/")] = report
    return reports


def adaptive_table(reports: dict[str, AdaptiveReport]) -> str:
    """The purifiers side by side: grey-box and white-box per attack, every draw, sanity checks."""
    first = next(iter(reports.values())).main
    attacks = list(dict.fromkeys(e.attack for r in reports.values() for e in r.main.attacks))
    names = {"pgd": "PGD", "apgd-ce": "APGD-CE"}
    steps = {a: first.settings["attacks"][a].get("steps") for a in attacks}
    header = ["purifier", "clean", "PSNR (dB)"]
    for a in attacks:
        header += [f"{names.get(a, a)}-{steps[a]} grey-box", f"EOT-{names.get(a, a)}-{steps[a]} white-box",
                   "white-box, every draw"]
    header.append("sanity checks")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for label, report in reports.items():
        by_key = {(e.attack, e.threat): e for e in report.main.attacks}
        cells = [f"**{label}**", percent(report.main.defended_accuracy), f"{report.main.psnr:.1f}"]
        for a in attacks:
            white = by_key[a, "white-box"]
            cells += [percent(by_key[a, "grey-box"].robust_accuracy), percent(white.robust_accuracy),
                      "—" if white.robust_every_draw is None else percent(white.robust_every_draw)]
        failed = [c.name for c in report.checks if not c.passed]
        cells.append("all passed" if not failed else "FAILED: " + "; ".join(failed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def adaptive_block(reports: dict[str, AdaptiveReport]) -> str:
    first = next(iter(reports.values()))
    main, high = first.main, first.high_eps
    start = REPORT_START
    text = (f"{main.classifier.replace('cifar_resnet56', 'ResNet-56')} (never used in training) behind each purifier "
            f"on test_dev images {start}-{start + main.num_images - 1} ({main.num_images} images), ℓ∞ ε = 8/255, "
            f"seed {main.seed}. Grey-box: the attack sees the bare classifier; white-box: exact gradients through "
            f"the purifier with EOT over {main.eot_samples} noise draws per step. *Every draw*: the image is "
            f"classified correctly in the scored purification and in {main.resubmissions} more independent ones of "
            f"the same adversarial image. Accuracy in %. Sanity checks: white-box ≤ grey-box per attack, and "
            f"white-box PGD at ε = 32/255 ≤ 5 % (on the first {high.num_images if high else '—'} images). "
            f"Reproduce with `python benchmarks/adaptive.py "
            f"{' '.join(f'--purifier {label}' for label in reports)} --limit {main.num_images} "
            f"--convergence-limit {high.num_images if high else main.num_images}` "
            f"(`benchmarks/results/adaptive-cifar10`, with each purifier's convergence plot; this block is written "
            f"by `recipes/write_model_card.py`).")
    lines = [text, "", adaptive_table(reports), ""]
    for label, report in reports.items():
        checks = "; ".join(f"{'passed' if c.passed else 'FAILED'}: {c.name} ({c.detail})" for c in report.checks)
        curve = ""
        if report.convergence:
            points = ", ".join(f"{p.steps} steps × {p.eot_samples} draws: {percent(p.robust_accuracy)} %"
                               for p in report.convergence)
            count = report.high_eps.num_images if report.high_eps else ""
            curve = (f" Convergence of white-box PGD on the first {count}"
                     f" images — {points}.")
        lines.append(f"- **{label}**: {checks}.{curve}")
    return "\n".join(lines)


# The campaign's targets on the report split (issue 10): clean accuracy and grey-box mean in %, PSNR in dB.
TARGETS = (("clean accuracy", 87.0, "%"), ("grey-box mean", 72.0, "%"), ("PSNR", 27.0, "dB"))


def campaign_targets(result: dict) -> str:
    """Which of the campaign's targets the reported result reaches, from its numbers."""
    measured = (100 * result["defended_accuracy"], 100 * result["mean"]["grey-box"], result["psnr"])
    met, unmet = [], []
    for (name, target, unit), value in zip(TARGETS, measured, strict=True):
        if value >= target:
            met.append(f"{name} {value:.1f} {unit} (≥ {target:g})")
        else:
            unmet.append(f"{name} {value:.1f} {unit} (target {target:g})")
    if not unmet:
        return "The campaign's targets are reached: " + ", ".join(met) + "."
    return ("The campaign's targets are not all reached yet: " + ", ".join(unmet)
            + ("; reached: " + ", ".join(met) if met else "") + ".")


def stretch_steps() -> dict[str, tuple[int, bool]]:
    """Each stretch since the replaced release -> (its steps, whether they come from its committed log rather
    than its schedule)."""
    steps = {}
    for record in since_replaced():
        log = ROOT / record["log"] if record["log"] else None
        if log is not None and log.is_file():
            steps[record["stretch"]] = (max(json.loads(line)["step"] for line in log.read_text().splitlines()
                                            if line.strip()), True)
        elif record["scheduled_steps"] is None:
            raise FileNotFoundError(f"{record['folder']}/record.json names no committed log and no scheduled steps")
        else:
            steps[record["stretch"]] = (record["scheduled_steps"], False)
    return steps


def _pixel_head_text(config: PurifierConfig) -> str:
    """How the bundled weights got their pixel head and training noise, if they have one."""
    if not config.pixel_head_width:
        return ""
    (image_low, image_high), (feature_low, feature_high) = config.train_image_noise_t, config.train_feature_noise_t
    return (f", given a {config.pixel_head_width}-channel pixel head by `recipes/grow_purifier.py --pixel-head` "
            "(closed at the start: the output unchanged; `benchmarks/results/fidelity-cifar10/PILOTS.md`, rounds 4 "
            f"and 5) with the training noise narrowed to image t {image_low}-{image_high} and feature t "
            f"{feature_low}-{feature_high}")


def _replaced_design(config: PurifierConfig, bundled: dict) -> str:
    """What the replaced release's design lacks of the bundled one's (`bundled`: its record, from
    `bundled_record`; the replaced one's config from its candidate folder)."""
    if not config.pixel_head_width:
        return ""
    replaced = candidate_records()[bundled["replaces"]]
    old = PurifierConfig.from_json(str(ROOT / replaced["folder"] / "config.json"))
    if not old.pixel_head_width:
        return (f" without the pixel head, trained with image / feature noise t {old.train_image_noise_t[0]}-"
                f"{old.train_image_noise_t[1]} / {old.train_feature_noise_t[0]}-{old.train_feature_noise_t[1]}")
    return ""


def findings(rows: list[dict]) -> str:
    """The `finding.md` texts of the selection runs, newest first, each `{row label}` replaced by that row's clean
    accuracy through the purifier (%)."""
    clean = {row["defence"]: percent(row["defended_accuracy"]) for row in rows}
    texts = []
    for path in selection_runs():
        if (path.parent / "finding.md").is_file():
            text = (path.parent / "finding.md").read_text(encoding="utf-8").strip()
            texts.append(re.sub(r"\{([^{}]+)\}", lambda match: clean[match.group(1)], text))
    return " ".join(texts)


def cifar10_card(reports: dict[str, AdaptiveReport]) -> str:
    name = "impure/cifar10"
    config, card = _bundled("cifar10")
    results = _json(RESULTS / "robustness-cifar10-report" / "robustness.json")["results"]
    selected = campaign_selection()
    selection_stretches = ",".join(map(str, sorted({_stretch_number(path) for path in selection_runs()})))
    bundled, noise_t = bundled_record(), f"t={config.image_noise_t}/{config.feature_noise_t}"
    since = stretch_steps()
    trained_since = " and ".join(f"{name}'s {steps:,}" + ("" if logged else " scheduled")
                                 for name, (steps, logged) in since.items())
    lost = [name for name, (_, logged) in since.items() if not logged]
    lost_text = (f" ({' and '.join(lost)}: {'its log was' if len(lost) == 1 else 'their logs were'} lost with the "
                 "machine, so the steps are the schedule's)" if lost else "")
    curve_data = _json(RESULTS / "campaign-cifar10" / "curve.json")
    curve, lost_images = curve_data["points"], curve_data.get("lost_images", 0)
    ours = next(r for r in results if r["defence"] == name)
    jpeg = next(r for r in results if r["defence"] == "jpeg75")
    recipe = load_config(ROOT / "configs" / "cifar10-campaign.toml")
    attacks = " / ".join(a.name + (f"-{a.options['steps']}" if "steps" in a.options else "")
                         for a in recipe.adversarial.attacks)
    training = ("Continued from impure/cifar10-s with `configs/cifar10-campaign.toml` "
                "(`bash recipes/train_cifar10.sh`, every stretch in `recipes/CAMPAIGN.md`), deepened after stretch 4 "
                f"from 4 / 2 to {config.encoder_depth} / {config.decoder_depth} encoder / decoder blocks by "
                "`recipes/grow_purifier.py` (new blocks start as the identity)" + _pixel_head_text(config)
                + " and trained on: adversarial fine-tuning "
                f"on {attacks} examples against two ResNet-20s (the shared one and impure/cifar10-resnet20), "
                f"pixel L1 + ResNet-20 feature L1 on patch-mixed images + {recipe.loss.classifier_weight:g} × "
                f"ResNet-20 cross-entropy, constant learning rate {_lr(recipe.optim.lr)} after a warm-up with a "
                f"linear cool-down towards {_lr(recipe.optim.min_lr)} at the end of a stretch, EMA of the weights "
                f"(decay {recipe.optim.ema_decay:g}; the EMA is exported). {curve[-1]['images']:,} training images "
                "seen in all (impure/cifar10-s's included"
                + (f"; {lost_images:,} of them in stretches whose logs were lost, counted from their schedules"
                   if lost_images else "")
                + ") up to the training curve's last point"
                + "".join(f", then {steps * recipe.optim.batch_size:,} in {name}'s schedule (its log was lost)"
                          for name, (steps, logged) in since.items() if not logged)
                + ", on a 2-core CPU. Weights: float16 safetensors; float16 "
                f"and float32 outputs agree to {card['float16_vs_float32_psnr_db']} dB. Training curve: "
                "`benchmarks/results/campaign-cifar10/curve.png`.")
    sections = [
        "## Grey-box robustness against the baselines",
        report_protocol(results[0]) + "\n\n" + report_table(results),
        f"It beats JPEG q75's grey-box mean ({percent(jpeg['mean']['grey-box'])} %) at "
        f"{percent(ours['defended_accuracy'])} % clean accuracy through it "
        f"(JPEG: {percent(jpeg['defended_accuracy'])} %). {report_seed_text()}",
        f"Candidates and strengths compared on images 0-249 (FGSM, PGD-10, MI-FGSM, APGD-DLR; "
        f"`benchmarks/results/campaign-cifar10/selection-stretch{{{selection_stretches}}}`, noise seed 0, the rule in "
        "`recipes/CAMPAIGN.md`); each row is labelled by the image / feature noise timesteps it purified at "
        f"(t=I/F). The bundled weights are {bundled['stretch']}'s at {noise_t}, and {bundled['replaces']} (the same "
        f"{config.encoder_depth} / {config.decoder_depth} blocks{_replaced_design(config, bundled)}, "
        f"{trained_since} steps less trained{lost_text}) is "
        f"the release they replace:\n\n"
        f"{selection_table(selected)}\n\n{seed_text(bundled['label'] + ' ' + noise_t)}",
        f"The chosen noise t {config.image_noise_t}/{config.feature_noise_t} is "
        f"{PurifierConfig().image_noise_t / config.image_noise_t:g}× milder than the paper's t "
        f"{PurifierConfig().image_noise_t}/{PurifierConfig().feature_noise_t} (ViT-B on ImageNet-scale training). "
        + findings(selected),
    ]
    if name in reports:
        sections += ["## Adaptive attacks", adaptive_block({name: reports[name]}) + "\n\nAgainst an attacker who "
                     "differentiates through it this purifier is no defence; its robust fine-tune is "
                     "impure/cifar10-robust (`configs/cifar10-robust.toml`, `recipes/CAMPAIGN.md`)."]
    sections += ["## Limits", f"The purified images are blurred ({ours['psnr']:.1f} dB PSNR), which costs clean "
                 f"accuracy. {campaign_targets(ours)}"]
    description = ("The recommended IMPure purifier (information-mask purification, Liu et al. 2023, "
                   "[arXiv 2311.15339](https://arxiv.org/abs/2311.15339)) for 32 × 32 CIFAR-10 images, bundled in the "
                   "package (loads offline). A training campaign in progress: these weights are its durable "
                   "checkpoint, and later stretches replace them.")
    return str(model_card(config, name=name, description=description, training=training,
                          evaluation=[_reported(ours)], sections=sections))


def _reported(result: dict) -> EvaluationResult:
    """A result of the report split, its data named (the benchmark passes the split as tensors)."""
    return EvaluationResult.from_dict({**result, "data": _report_split(result["num_images"])})


def _report_split(count: int) -> str:
    """The data of a result on the first `count` images of the report split."""
    return f"CIFAR-10 test_dev images {REPORT_START}-{REPORT_START + count - 1}"


def cifar10_robust_card(reports: dict[str, AdaptiveReport]) -> str | None:
    name = "impure/cifar10-robust"
    if not (WEIGHTS / "cifar10-robust" / "config.json").is_file() or name not in reports:
        return None
    config, card = _bundled("cifar10-robust")
    log_path = RESULTS / "robust-cifar10" / "log.jsonl"  # the exported run's log: its last step was exported
    recipe = load_config(ROOT / "configs" / "cifar10-robust.toml")
    images = None
    if log_path.is_file():
        steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines() if line.strip()]
        images = max(steps) * recipe.optim.batch_size * recipe.optim.grad_accum
    report = reports[name]
    attack, robust = recipe.robust.attack, recipe.robust
    training = (f"Robust fine-tuning (`stage = \"robust\"`, AToP-style) of impure/cifar10 (the campaign's stretch-1 "
                f"weights, commit b73dc0e) exported at image/feature "
                f"noise t {config.image_noise_t}/{config.feature_noise_t} (its evaluation strength here), with the "
                f"training noise narrowed to t {config.train_image_noise_t[0]}-{config.train_image_noise_t[1]} "
                f"(image) and {config.train_feature_noise_t[0]}-{config.train_feature_noise_t[1]} (feature), by "
                "`configs/cifar10-robust.toml` (`bash recipes/train_cifar10_robust.sh`, every stretch in "
                "`recipes/CAMPAIGN.md`): each step attacks `PurifiedClassifier(current purifier, frozen ResNet-20)` "
                f"with {attack.name.upper()}-{attack.options['steps']} (ε {format_eps(attack.options['eps'])}, step "
                f"{format_eps(attack.options['alpha'])}, random start, exact gradients"
                + (f", EOT over {robust.eot_samples} draws" if robust.eot_samples > 1 else "")
                + "), alternating between two ResNet-20s (the shared one and impure/cifar10-resnet20), then trains "
                "on pixel L1 + ResNet-20 feature L1 on patch-mixed images (clean targets) + "
                f"{robust.ce_weight:g} × the frozen classifier's cross-entropy on the purified adversarial images; "
                f"AdamW at {_lr(recipe.optim.lr)}, EMA of the weights (decay {recipe.optim.ema_decay:g}; exported)."
                + (f" {images:,} training images seen in this stage." if images else "")
                + f" Weights: float16 safetensors; float16 and float32 outputs agree to "
                f"{card['float16_vs_float32_psnr_db']} dB. Training curve: "
                "`benchmarks/results/robust-cifar10/curve.png`.")
    worst_white = min(e.robust_accuracy for e in report.main.attacks if e.threat == "white-box")
    clean = report.main.defended_accuracy
    reached = worst_white >= 0.15 and clean >= 0.70
    sections = ["## Adaptive attacks", adaptive_table({name: report}),
                "Convergence and checks (`benchmarks/results/adaptive-cifar10/impure_cifar10-robust/adaptive.md`, "
                "`convergence.png`):\n\n" + "\n".join(
                    f"- {'passed' if c.passed else 'FAILED'}: {c.name} ({c.detail})" for c in report.checks),
                "## Strength and what the fine-tune adds", robust_selection_text(),
                "## Limits", f"Fine-tuned on a CPU{f' for {images:,} images' if images else ''}. The project's "
                f"target, ≥ 15 % under the worse of the white-box attacks at ≥ 70 % clean, is "
                f"{'' if reached else 'not '}reached on these images (worse white-box attack "
                f"{percent(worst_white)} %, clean {percent(clean)} %). The purifier "
                "is stochastic at this strength: the *every draw* columns are what an attacker who may resubmit an "
                "image faces."]
    description = ("A robust fine-tune of impure/cifar10 for 32 × 32 CIFAR-10 images (IMPure, "
                   "[arXiv 2311.15339](https://arxiv.org/abs/2311.15339)), trained against attacks that "
                   "differentiate through the purifier. Bundled in the package (loads offline).")
    return str(model_card(config, name=name, description=description, training=training,
                          evaluation=[report.main], sections=sections))


def robust_selection_text() -> str:
    """The selection-split comparison of the robust fine-tune's strengths and of impure/cifar10 without it."""
    path = RESULTS / "robust-selection" / "candidate-s8" / "robustness.json"
    results, names = _json(path)["results"], run_labels(path)
    grey = {r["defence"]: r for r in results if r["defence"] != "none" and r["threats"] == ["grey-box"]}
    white = {r["defence"]: r for r in results if r["threats"] == ["white-box"]}
    grey_count, first_white = next(iter(grey.values()))["num_images"], next(iter(white.values()))
    lines = [f"Chosen on test_dev images 0-{grey_count - 1} (clean and grey-box PGD-10 on {grey_count} images, "
             f"white-box EOT-PGD-10 with {first_white['eot_samples']} draws on the first "
             f"{first_white['num_images']}; `benchmarks/results/robust-selection/candidate-s8`), strengths relative "
             "to the exported noise; the last row is the starting point without the fine-tune:", "",
             "| purifier | clean | grey-box PGD-10 | white-box EOT-PGD-10 | PSNR (dB) |", "|---|---:|---:|---:|---:|"]
    for label, result in grey.items():
        name = names.get(label) or label.replace("candidate", names["candidate"])
        white_box = percent(white[label]["attacks"][0]["robust_accuracy"]) if label in white else "—"
        lines.append(f"| {name} | {percent(result['defended_accuracy'])} | "
                     f"{percent(result['attacks'][0]['robust_accuracy'])} | {white_box} | {result['psnr']:.1f} |")
    return "\n".join(lines)


def cifar10_s_card() -> str:
    name = "impure/cifar10-s"
    config, card = _bundled("cifar10-s")
    report = _json(RESULTS / "robustness-cifar10-report" / "robustness.json")["results"]
    first = _json(RESULTS / "robustness-cifar10-s" / "robustness.json")["results"]
    adaptive = _json(RESULTS / "robustness-cifar10-s-adaptive" / "robustness.json")["results"]
    ours = next(r for r in report if r["defence"] == name)
    training = ("`bash recipes/train_cifar10_s.sh` (`configs/cifar10-s-cpu-pretrain.toml`, then "
                "`configs/cifar10-s-cpu-finetune.toml`, then `recipes/export_purifier.py --strength 0.1`): "
                "self-reconstruction with pixel L1, then adversarial fine-tuning on PGD-5 / FGSM examples (ε 8/255) "
                "against the shared ResNet-20 made on the fly, loss pixel L1 + ResNet-20 feature L1 on patch-mixed "
                "images + 0.05 × ResNet-20 cross-entropy; on the 50,000 CIFAR-10 training images (random flips and "
                f"±2 px shifts), on a CPU. Weights: float16 safetensors; float16 and float32 outputs agree to "
                f"{card['float16_vs_float32_psnr_db']} dB.")
    lines = ["| classifier | threat | images | clean through it | mean | worst |", "|---|---|---:|---:|---:|---:|"]
    for result in first + adaptive:
        if result["defence"] == name:
            for threat in result["threats"]:
                lines.append(f"| {result['classifier']} | {threat} | {result['num_images']} | "
                             f"{percent(result['defended_accuracy'])} | {percent(result['mean'][threat])} | "
                             f"{percent(result['worst_case'][threat])} |")
    sections = ["## First measurements (test_dev images 0-199; adaptive: 0-49, EOT 8)", "\n".join(lines),
                "Superseded by impure/cifar10, which continues its training."]
    return str(model_card(config, name=name, description="The first bundled IMPure purifier for 32 × 32 CIFAR-10 "
                          "images; impure/cifar10 continues its training and is the recommended one.",
                          training=training, evaluation=[_reported(ours)], sections=sections))


def replace_block(text: str, marker: str, content: str, path: Path) -> str:
    """`text` (the file at `path`) with the block between the `marker` comments replaced by `content`."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block")
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{content}\n{end}", text, flags=re.S)


def generate() -> dict[Path, str]:
    """Every file this script writes, with its new text."""
    reports = adaptive_reports()
    cards = {"cifar10": cifar10_card(reports), "cifar10-s": cifar10_s_card(),
             "cifar10-robust": cifar10_robust_card(reports)}
    files = {WEIGHTS / folder / "README.md": text for folder, text in cards.items() if text is not None}
    results = _json(RESULTS / "robustness-cifar10-report" / "robustness.json")["results"]
    grey = (f"{report_protocol(results[0])} Reproduce with `python benchmarks/robustness.py --start 250 --limit 250 "
            f"--classifiers cifar_resnet56 --threat grey-box --defences none,jpeg75 --purifier impure/cifar10 "
            f"--label impure/cifar10 --purifier impure/cifar10-s --label impure/cifar10-s` "
            f"(`benchmarks/results/robustness-cifar10-report`; this block is written by "
            f"`recipes/write_model_card.py`).\n\n{report_table(results)}")
    blocks = {"cifar10-results": grey, **({"adaptive-results": adaptive_block(reports)} if reports else {})}
    for marker, content in blocks.items():
        for path in BLOCKS[marker]:
            files[path] = replace_block(files.get(path) or path.read_text(encoding="utf-8"), marker, content, path)
    return files


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = args == ["--check"]
    if args and not check:
        raise SystemExit("usage: python recipes/write_model_card.py [--check]")
    stale = []
    for path, text in generate().items():
        if check:
            if path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            atomic_write(path, text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run python recipes/write_model_card.py): "
              + ", ".join(str(path.relative_to(ROOT)) for path in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
