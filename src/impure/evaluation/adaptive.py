"""The adaptive-attack protocol: checks that a stochastic purifier's robustness is not an artefact of its
randomness or of masked gradients (resubmission, convergence in attack steps and EOT draws, sanity)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impure._util.atomic import atomic_write
from impure.evaluation.plots import save_convergence_plot
from impure.evaluation.report import EvaluationResult
from impure.evaluation.runner import EvaluationSettings, evaluate
from impure.formatting import format_eps, percent

__all__ = ["AdaptiveReport", "ConvergencePoint", "SanityCheck", "adaptive_evaluation", "convergence",
           "sanity_checks"]


@dataclass
class ConvergencePoint:
    """White-box robust accuracy of one attack at one number of steps and EOT draws."""

    steps: int
    eot_samples: int
    robust_accuracy: float
    robust_every_draw: float | None = None
    num_images: int | None = None  # images the point was measured on


@dataclass
class SanityCheck:
    """One check a reviewer of a purification defence asks for; `detail` says what was compared."""

    name: str
    passed: bool
    detail: str


def convergence(classifier: Any, data: Any, purifier: Any, *, attack: str = "pgd",
                steps: Sequence[int] = (10, 20, 50, 100), eot_samples: Sequence[int] = (1, 4, 8),
                steps_at_eot: int = 1, eot_at_steps: int = 20,
                settings: EvaluationSettings | None = None, **overrides: Any) -> list[ConvergencePoint]:
    """White-box robust accuracy of `attack` against its number of steps (at `steps_at_eot` EOT draws) and
    against EOT draws (at `eot_at_steps` steps). A robustness that is real flattens out as either grows; one
    that keeps falling means the reported attack was too weak.

    Each point is a separate `evaluate` run (same images, same seed), so the point at k steps is the attack
    a user would run with `steps=k`. A deterministic defence takes one draw, so its EOT sweep is one point.
    `settings` and `overrides` are as for `evaluate` (threat, attacks,
    steps and eot_samples are set here).
    """
    grid = [(s, steps_at_eot) for s in steps] + [(eot_at_steps, e) for e in eot_samples]
    points: list[ConvergencePoint] = []
    stochastic = True
    for step_count, draws in dict.fromkeys(grid):
        if not stochastic and (step_count, 1) in {(p.steps, p.eot_samples) for p in points}:
            continue  # a deterministic defence takes one draw whatever is asked: that point is measured
        result = evaluate(classifier, data, purifier, settings, **{**overrides, "attacks": [attack],
                          "threat": "white-box", "steps": step_count, "eot_samples": draws})
        entry, stochastic = result.attacks[0], result.stochastic_defence
        points.append(ConvergencePoint(step_count, result.eot_samples, entry.robust_accuracy,
                                       entry.robust_every_draw, result.num_images))
    return points


def sanity_checks(result: EvaluationResult, high_eps: EvaluationResult | None = None, *,
                  zero_tolerance: float = 0.05) -> list[SanityCheck]:
    """The gradient-masking checks on a result with both grey-box and white-box attacks.

    - For each attack, white-box robust accuracy must not exceed grey-box by more than one image: an
      attacker who sees the defence can always fall back on the grey-box examples, so more robustness under
      white-box means its gradients are masked (or the attack too weak).
    - `high_eps` (a white-box result at a large budget, e.g. ε = 32/255): robust accuracy must fall to about
      0 (at most `zero_tolerance`), else the attack does not reach what an unbounded one would.
    """
    checks = []
    margin = 1 / max(result.num_images, 1)
    by_key = {(e.attack, e.threat): e.robust_accuracy for e in result.attacks}
    for name in dict.fromkeys(e.attack for e in result.attacks):
        if (name, "grey-box") not in by_key or (name, "white-box") not in by_key:
            continue
        grey, white = by_key[name, "grey-box"], by_key[name, "white-box"]
        checks.append(SanityCheck(
            f"white-box <= grey-box ({name})", white <= grey + margin + 1e-9,
            f"white-box {percent(white)} % vs grey-box {percent(grey)} %"
            + ("" if white <= grey + margin + 1e-9 else ": the gradients through the defence look masked")))
    if high_eps is not None:
        for entry in high_eps.attacks:
            ok = entry.robust_accuracy <= zero_tolerance
            checks.append(SanityCheck(
                f"~0 at ε = {format_eps(high_eps.eps)} ({entry.attack}, {entry.threat})", ok,
                f"robust accuracy {percent(entry.robust_accuracy)} % (at most {percent(zero_tolerance)} % "
                "expected)" + ("" if ok else ": the attack does not break the defence even with a budget "
                                             "that destroys the image; suspect masked gradients")))
    return checks


@dataclass
class AdaptiveReport:
    """The adaptive protocol's results: the main grey-/white-box evaluation (with resubmission), the
    large-budget run, the convergence curves and the sanity checks; `save` writes them."""

    main: EvaluationResult
    high_eps: EvaluationResult | None
    convergence: list[ConvergencePoint] = field(default_factory=list)
    convergence_attack: str = "pgd"
    checks: list[SanityCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"main": self.main.to_dict(), "high_eps": None if self.high_eps is None else self.high_eps.to_dict(),
                "convergence_attack": self.convergence_attack,
                "convergence": [dataclasses.asdict(p) for p in self.convergence],
                "checks": [dataclasses.asdict(c) for c in self.checks]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptiveReport:
        return cls(main=EvaluationResult.from_dict(data["main"]),
                   high_eps=None if data.get("high_eps") is None else EvaluationResult.from_dict(data["high_eps"]),
                   convergence=[ConvergencePoint(**p) for p in data.get("convergence", [])],
                   convergence_attack=data.get("convergence_attack", "pgd"),
                   checks=[SanityCheck(**c) for c in data.get("checks", [])])  # fmt: skip

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> AdaptiveReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_markdown(self) -> str:
        main = self.main
        lines = [main.to_markdown(), "## Sanity checks", ""]
        if not self.checks:
            lines.append("None measured.")
        for check in self.checks:
            lines.append(f"- {'PASSED' if check.passed else '**FAILED**'}: {check.name}: {check.detail}")
        if self.convergence:
            count = self.convergence[0].num_images or (self.high_eps or main).num_images
            lines += ["", f"## Convergence ({self.convergence_attack}, white-box, ε = {format_eps(main.eps)}, "
                          f"{count} images)", "",
                      "| steps | EOT draws | robust accuracy (%) | every draw (%) |", "|---:|---:|---:|---:|"]
            lines += [f"| {p.steps} | {p.eot_samples} | {percent(p.robust_accuracy)} | "
                      f"{'—' if p.robust_every_draw is None else percent(p.robust_every_draw)} |"
                      for p in self.convergence]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike, *, plot: bool = True) -> dict[str, Path]:
        """Write `adaptive.json`, `adaptive.md` and (with matplotlib, when there are curves) `convergence.png`."""
        out = Path(out_dir)
        paths = {"json": atomic_write(out / "adaptive.json", json.dumps(self.to_dict(), indent=2) + "\n"),
                 "markdown": atomic_write(out / "adaptive.md", self.to_markdown())}
        if plot and self.convergence:
            paths["plot"] = save_convergence_plot(self.convergence, out / "convergence.png",
                                                  title=f"{self.main.classifier} behind {self.main.defence}: "
                                                        f"white-box {self.convergence_attack}")
        return paths


def adaptive_evaluation(classifier: Any, data: Any, purifier: Any, *,
                        attacks: Sequence[str] = ("pgd", "apgd-ce"), steps: dict[str, int] | None = None,
                        eot_samples: int = 4, resubmissions: int = 10, high_eps: float | None = 32 / 255,
                        convergence_attack: str | None = "pgd", convergence_steps: Sequence[int] = (10, 20, 50, 100),
                        convergence_eot: Sequence[int] = (1, 4, 8), convergence_limit: int | None = None,
                        zero_tolerance: float = 0.05, **overrides: Any) -> AdaptiveReport:
    """Run the adaptive protocol on `classifier` behind `purifier`.

    1. Grey-box and white-box (exact gradients, EOT over `eot_samples` draws) robust accuracy for each of
       `attacks`, with `steps[name]` iterations (default PGD 20, APGD 50), and the fraction of images that
       survive `resubmissions` more independent purifications of the same adversarial image.
    2. White-box `convergence_attack` at `high_eps`: it must fall to about 0.
    3. Convergence of `convergence_attack` in steps and EOT draws (`convergence`).
    4. The sanity checks (`sanity_checks`), stated in words in the report.

    `convergence_limit` evaluates 2. and 3. on the first that many images only (they cost many attacks).
    Further keywords (`limit`, `batch_size`, `seed`, `device`, `eps`, ...) go to every `evaluate` call.
    """
    steps = {"pgd": 20, "apgd-ce": 50, **(steps or {})}
    options = {name: {"steps": steps[name]} for name in attacks if name in steps}
    main = evaluate(classifier, data, purifier, **{**overrides, "attacks": list(attacks), "threat": "both",
                    "attack_options": options, "eot_samples": eot_samples, "resubmissions": resubmissions})
    high = None
    if convergence_limit is not None:
        overrides = {**overrides, "limit": min(convergence_limit, overrides.get("limit") or convergence_limit)}
    if high_eps is not None and convergence_attack is not None:
        high = evaluate(classifier, data, purifier, **{**overrides, "attacks": [convergence_attack],
                        "threat": "white-box", "eps": high_eps, "steps": steps.get(convergence_attack),
                        "eot_samples": eot_samples})
    curve = []
    if convergence_attack is not None:
        curve = convergence(classifier, data, purifier, attack=convergence_attack, steps=convergence_steps,
                            eot_samples=convergence_eot, eot_at_steps=steps.get(convergence_attack, 20),
                            **{**overrides, "resubmissions": resubmissions})
    return AdaptiveReport(main=main, high_eps=high, convergence=curve,
                          convergence_attack=convergence_attack or "",
                          checks=sanity_checks(main, high, zero_tolerance=zero_tolerance))
