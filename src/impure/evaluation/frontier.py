"""The accuracy–robustness frontier: defences that no other one beats on both clean and robust accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impure.evaluation.report import EvaluationResult, _percent

__all__ = ["frontier_table", "pareto_front"]


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
            _percent(result.defended_accuracy),
            _percent(result.robust_accuracy(attack, threat)), _percent(result.mean[threat]),
            _percent(result.worst_case[threat]), "—" if result.psnr is None else f"{result.psnr:.1f}",
            f"{result.images_per_second:.0f}", f"{result.classifier_images_per_second:.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
