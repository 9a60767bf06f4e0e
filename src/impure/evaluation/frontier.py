"""The accuracy–robustness frontier: defences that no other one beats on both clean and robust accuracy."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from impure.evaluation.report import EvaluationResult
from impure.formatting import percent as format_percent

__all__ = ["choose_by_seed_means", "frontier_table", "pareto_front", "seed_means", "seed_means_table"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Whether each point is on the Pareto frontier, higher being better in both coordinates.

    A point is on it unless another point is at least as good in both coordinates and better in one;
    equal points are all on it.

    Args:
        points: (x, y) pairs, e.g. (clean accuracy through a defence, its mean robust accuracy).
    """
    if len(points) == 0:
        return []
    values = torch.tensor([tuple(point) for point in points], dtype=torch.float64)
    if values.ndim != 2 or values.shape[1] != 2 or not torch.isfinite(values).all():
        raise ValueError(f"pareto_front needs finite (x, y) pairs, got {list(points)!r}")
    # [i, j]: point j is at least as good as point i in both coordinates / better in one of them.
    at_least = (values[None, :, :] >= values[:, None, :]).all(dim=2)
    better = (values[None, :, :] > values[:, None, :]).any(dim=2)
    return (~(at_least & better).any(dim=1)).tolist()


def frontier_table(results: Sequence[EvaluationResult], attack: str = "pgd", threat: str = "grey-box") -> str:
    """One Markdown table of defences on the clean–robust frontier, sorted by clean accuracy through the
    defence; ★ marks the points on the Pareto frontier of (clean accuracy through the defence, mean robust
    accuracy under `threat`).

    Columns: the defence, the noise t an IMPure purifier ran at (image / feature), clean accuracy through it,
    robust accuracy against `attack` and the mean (and worst case) over all evaluated attacks under `threat`
    (in %), the PSNR of P(x) against x, and images/s of the classifier behind the defence beside the
    classifier alone.

    Args:
        results: evaluations of one classifier on the same images, each with `attack` under `threat`.
        attack: the attack given its own column, e.g. "pgd".
        threat: the threat model of the robust-accuracy columns.
    """
    if not results:
        raise ValueError("frontier_table needs at least one EvaluationResult")
    setups = {(r.classifier, r.data, r.num_images) for r in results}
    if len(setups) > 1:
        raise ValueError(f"frontier_table compares defences on one classifier and data; got {sorted(setups)}")
    for result in results:
        if threat not in result.mean:
            raise ValueError(f"the result for {result.defence!r} has no {threat!r} evaluation")
        result.robust_accuracy(attack, threat)  # a KeyError that names what was measured
    on_front = pareto_front([(r.defended_accuracy, r.mean[threat]) for r in results])
    order = sorted(range(len(results)), key=lambda i: (-results[i].defended_accuracy, -results[i].mean[threat]))
    steps = results[0].settings.get("attacks", {}).get(attack, {}).get("steps")
    attack_title = attack.upper() + (f"-{steps}" if steps else "")
    header = ["frontier", "defence", "noise t", "clean through defence", f"{attack_title} {threat}", f"{threat} mean",
              f"{threat} worst", "PSNR (dB)", "images/s (defended)", "images/s (classifier)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|:---:|---|" + "---:|" * (len(header) - 2)]
    for i in order:
        result = results[i]
        cells = [
            "★" if on_front[i] else "", result.defence,
            "—" if result.noise_t is None else f"{result.noise_t[0]}/{result.noise_t[1]}",
            format_percent(result.defended_accuracy),
            format_percent(result.robust_accuracy(attack, threat)), format_percent(result.mean[threat]),
            format_percent(result.worst_case[threat]), "—" if result.psnr is None else f"{result.psnr:.1f}",
            f"{result.images_per_second:.0f}", f"{result.classifier_images_per_second:.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_means(
    results_by_seed: Mapping[int, Sequence[EvaluationResult]], threat: str = "grey-box"
) -> list[dict[str, Any]]:
    """Each defence's numbers under every seed and their means: one noise draw of a stochastic purifier (and
    the attacks' random starts) moves accuracies by points, so compare defences by means over seeds.

    Args:
        results_by_seed: seed -> the same rows (classifier, defence, data, images) evaluated with that seed;
            rows without a `threat` evaluation (e.g. white-box rows) are left out.
        threat: the threat model of the robust-accuracy numbers.

    Returns:
        One dict per row, in the first seed's order: "classifier", "defence", "num_images", "noise_t", and
        for "clean" (accuracy through the defence), "mean" and "worst" (robust accuracy over the attacks under
        `threat`) and "psnr" a dict {"per_seed": [...], "mean": ...} (psnr None without a defence).
    """
    if not results_by_seed:
        raise ValueError("seed_means needs the results of at least one seed")
    rows: dict[tuple, list[EvaluationResult]] = {}
    keys_by_seed = {}
    for seed, results in results_by_seed.items():
        keyed = {(r.classifier, r.defence, r.data, r.num_images): r for r in results if threat in r.mean}
        if len(keyed) != sum(threat in r.mean for r in results):
            raise ValueError(f"seed {seed} has two {threat} rows for one of {sorted(keyed)}")
        keys_by_seed[seed] = list(keyed)
        for key, result in keyed.items():
            rows.setdefault(key, []).append(result)
    first_seed, first_keys = next(iter(keys_by_seed.items()))
    for seed, keys in keys_by_seed.items():
        if set(keys) != set(first_keys):
            raise ValueError(f"seeds {first_seed} and {seed} evaluated different rows: "
                             f"{sorted(set(keys) ^ set(first_keys))}")  # fmt: skip

    def summary(values: list[float | None]) -> dict[str, Any]:
        known = [value for value in values if value is not None]
        return {"per_seed": values, "mean": statistics.fmean(known) if len(known) == len(values) else None}

    return [
        {"classifier": key[0], "defence": key[1], "num_images": key[3], "noise_t": rows[key][0].noise_t,
         "clean": summary([r.defended_accuracy for r in rows[key]]),
         "mean": summary([r.mean[threat] for r in rows[key]]),
         "worst": summary([r.worst_case[threat] for r in rows[key]]),
         "psnr": summary([r.psnr for r in rows[key]])}
        for key in first_keys
    ]  # fmt: skip


def choose_by_seed_means(
    rows: Sequence[dict[str, Any]], margin: float = 0.01
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick a purifier from `seed_means` rows, the rule the bundled weights are chosen by: the highest mean
    clean accuracy through it, except that every row within `margin` of that accuracy competes and the
    highest mean robust accuracy among them wins (a clean gap inside the seed noise is no reason to lose
    robustness). Only purifier rows (with noise timesteps) take part; baselines such as JPEG do not.

    Returns:
        (the chosen row, the competing rows in order of mean clean accuracy, the chosen one included).
    """
    if not 0 <= margin < 1:
        raise ValueError(f"margin is a fraction of accuracy in [0, 1), got {margin}")
    candidates = [row for row in rows if row["noise_t"] is not None]
    if not candidates:
        raise ValueError(f"no purifier rows to choose from among {[row['defence'] for row in rows]}")
    candidates.sort(key=lambda row: -row["clean"]["mean"])
    best_clean = candidates[0]["clean"]["mean"]
    competing = [row for row in candidates if row["clean"]["mean"] >= best_clean - margin - 1e-9]
    return max(competing, key=lambda row: row["mean"]["mean"]), competing


def choice_reason(chosen: dict[str, Any], competing: Sequence[dict[str, Any]], margin: float = 0.01) -> str:
    """Why `choose_by_seed_means` (with this `margin`) picked `chosen` (a clause, e.g. "it has the highest clean
    accuracy of the purifiers, by more than 1 point"), from what it returned."""
    name, others = chosen["defence"], [row["defence"] for row in competing if row is not chosen]
    points = f"{100 * margin:g} point{'' if margin == 0.01 else 's'}"
    if not others:
        return f"it has the highest clean accuracy of the purifiers, by more than {points}"
    return (f"{' and '.join(others)} {'is' if len(others) == 1 else 'are'} within {points} of the highest clean "
            f"accuracy of the purifiers and {name} has the highest grey-box mean of them")


def seed_means_table(results_by_seed: Mapping[int, Sequence[EvaluationResult]], threat: str = "grey-box") -> str:
    """One Markdown table of `seed_means`: per defence, clean accuracy through it and the mean and worst
    robust accuracy under `threat` (in %) and the PSNR, each as the mean over seeds and every seed's value
    (in the seeds' order), sorted by the mean clean accuracy."""
    rows = seed_means(results_by_seed, threat)
    seeds = " / ".join(str(seed) for seed in results_by_seed)

    def cells(entry: dict[str, Any], percent: bool = True) -> list[str]:
        if entry["mean"] is None:
            return ["—", "—"]
        text = format_percent if percent else (lambda value: f"{value:.1f}")
        return [text(entry["mean"]), " / ".join(text(value) for value in entry["per_seed"])]

    per_seed = f"seeds {seeds}"
    header = ["classifier", "defence", "noise t", "images", "clean through defence", per_seed, f"{threat} mean",
              per_seed, f"{threat} worst", per_seed, "PSNR (dB)", per_seed]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for row in sorted(rows, key=lambda row: -row["clean"]["mean"]):
        noise_t = "—" if row["noise_t"] is None else f"{row['noise_t'][0]}/{row['noise_t'][1]}"
        lines.append("| " + " | ".join([row["classifier"], row["defence"], noise_t, str(row["num_images"]),
                                        *cells(row["clean"]), *cells(row["mean"]), *cells(row["worst"]),
                                        *cells(row["psnr"], percent=False)]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"
