"""The result of a robustness evaluation and its reports: JSON, Markdown tables, atomic file writes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._util.atomic import atomic_write
from ..formatting import format_eps, percent
from . import plots

__all__ = ["AttackResult", "EvaluationResult", "atomic_write", "summary_table"]


@dataclass
class AttackResult:
    """Robustness against one attack under one threat model."""

    attack: str  # attack name, e.g. "pgd"
    threat: str  # "grey-box", "white-box" or "bpda"
    robust_accuracy: float  # fraction of all images still classified correctly through the defence
    # Statistics over the attacked images: all of them on the bare classifier (grey-box); through the defence
    # (white-box, BPDA) those it classifies correctly when clean, since the others count as failures anyway.
    residual_linf: float  # mean of ||P(x_adv) - P(x)||_inf (P = identity without a defence)
    residual_l2: float  # mean of ||P(x_adv) - P(x)||_2, on the [0, 1] pixel scale
    perturbation_linf: float  # largest ||x_adv - x||_inf (must not exceed eps)
    seconds: float  # wall time of making and scoring the adversarial examples
    # With `resubmissions` (stochastic defence): the fraction of all images classified correctly in the scored
    # draw and in every one of the extra independent purification draws of the same adversarial image.
    robust_every_draw: float | None = None


@dataclass
class EvaluationResult:
    """Everything `evaluate` measured; save it with `save`, `save_json`, `save_markdown`, `save_grid`."""

    classifier: str
    defence: str  # "none", a baseline name or the purifier's description
    data: str
    num_images: int
    eps: float
    threats: list[str]
    clean_accuracy: float  # bare classifier on clean images
    defended_accuracy: float  # classifier on purified clean images
    psnr: float | None  # mean PSNR (dB) of P(x) against x; None without a defence
    images_per_second: float  # defended inference throughput (purifier + classifier), clean images
    classifier_images_per_second: float  # the bare classifier's throughput, for comparison
    peak_memory_mb: float | None  # peak GPU memory on CUDA, else the process's peak resident memory
    device: str
    seed: int  # the seed the run used (drawn at random when none was given), to repeat it
    eot_samples: int  # gradient samples per attack step in white-box attacks (1 for a deterministic defence)
    stochastic_defence: bool
    resubmissions: int = 0  # extra purification draws per adversarial image (0: not measured)
    noise_t: list[int] | None = None  # an IMPure noise-mode purifier's image / feature noise t, else None
    settings: dict[str, Any] = field(default_factory=dict)  # attack parameters
    attacks: list[AttackResult] = field(default_factory=list)
    worst_case: dict[str, float] = field(default_factory=dict)  # threat -> images robust to every attack
    mean: dict[str, float] = field(default_factory=dict)  # threat -> mean robust accuracy over attacks
    # First images of each (threat, attack) for `save_grid`: clean, adversarial, purified, residual.
    examples: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    # Per-image outcomes of this run (not saved): "labels", "clean_prediction" (bare classifier),
    # "defended_prediction" (through the defence) and, per "{threat}/{attack}/", "prediction" (through the
    # defence, adversarial image) and the norms "perturbation_linf", "perturbation_l2", "residual_linf",
    # "residual_l2" (0 for images not attacked).
    per_image: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------------------------------------
    def robust_accuracy(self, attack: str, threat: str = "grey-box") -> float:
        """Robust accuracy against `attack` under `threat`."""
        for entry in self.attacks:
            if entry.attack == attack and entry.threat == threat:
                return entry.robust_accuracy
        known = sorted({(e.attack, e.threat) for e in self.attacks})
        raise KeyError(f"no result for attack {attack!r} under {threat!r}; measured: {known}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every measured number (examples excluded)."""
        data = dataclasses.asdict(self)
        data.pop("examples")
        data.pop("per_image")
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Rebuild a result from `to_dict` output (for example a saved JSON file)."""
        data = dict(data)
        data["attacks"] = [AttackResult(**entry) for entry in data.get("attacks", [])]
        return cls(**data)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> EvaluationResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON (atomically)."""
        return atomic_write(path, self.to_json() + "\n")

    def to_markdown(self) -> str:
        """A Markdown report: the setting, clean numbers, and robust accuracy per attack and threat."""
        pct = percent
        lines = [
            f"# Robustness of {self.classifier} with defence {self.defence}",
            "",
            f"Data: {self.data} ({self.num_images} images); ℓ∞ ε = {format_eps(self.eps)}; "
            f"device {self.device}; seed {self.seed}; EOT samples {self.eot_samples}"
            f"{' (stochastic defence)' if self.stochastic_defence else ''}"
            f"{'' if self.noise_t is None else f'; purifier noise t {self.noise_t[0]}/{self.noise_t[1]}'}.",
            "",
            "| clean accuracy | through the defence | PSNR (dB) | images/s (defended) "
            "| images/s (classifier) | peak memory (MB) |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {pct(self.clean_accuracy)} | {pct(self.defended_accuracy)} | "
            f"{'—' if self.psnr is None else f'{self.psnr:.2f}'} | {self.images_per_second:.1f} | "
            f"{self.classifier_images_per_second:.1f} | "
            f"{'—' if self.peak_memory_mb is None else f'{self.peak_memory_mb:.0f}'} |",
            "",
            "Robust accuracy (%) on all images; residual = mean ‖P(x_adv) − P(x)‖ (ℓ∞ in /255, ℓ2).",
            "",
            "| attack | " + " | ".join(f"{t} | residual ℓ∞ | residual ℓ2" for t in self.threats) + " |",
            "|---|" + "---:|---:|---:|" * len(self.threats),
        ]
        by_key = {(e.attack, e.threat): e for e in self.attacks}
        for name in dict.fromkeys(e.attack for e in self.attacks):
            cells = []
            for threat in self.threats:
                entry = by_key.get((name, threat))
                if entry is None:
                    cells += ["—"] * 3
                else:
                    cells += [
                        pct(entry.robust_accuracy),
                        f"{entry.residual_linf * 255:.2f}",
                        f"{entry.residual_l2:.3f}",
                    ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for label, values in (("**worst case**", self.worst_case), ("**mean**", self.mean)):
            cells = []
            for threat in self.threats:
                cells += [pct(values[threat]) if threat in values else "—", "", ""]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        resubmitted = [e for e in self.attacks if e.robust_every_draw is not None]
        if resubmitted:
            lines += ["", f"Resubmission: robust accuracy (%) in the scored draw and in every one of "
                          f"{1 + self.resubmissions} independent purification draws of the same adversarial image.",
                      "", "| attack | threat | one draw | every draw |", "|---|---|---:|---:|"]
            lines += [f"| {e.attack} | {e.threat} | {pct(e.robust_accuracy)} | {pct(e.robust_every_draw)} |"
                      for e in resubmitted]
        return "\n".join(lines) + "\n"

    def save_markdown(self, path: str | os.PathLike) -> Path:
        """Write `to_markdown()` (atomically)."""
        return atomic_write(path, self.to_markdown())

    def save(self, out_dir: str | os.PathLike, *, grid: bool = False, chart: bool = False) -> dict[str, Path]:
        """Write `result.json` and `result.md` into `out_dir`, and on request `grid.png` and `chart.png`."""
        out = Path(out_dir)
        paths = {
            "json": self.save_json(out / "result.json"),
            "markdown": self.save_markdown(out / "result.md"),
        }
        if grid:
            paths["grid"] = self.save_grid(out / "grid.png")
        if chart:
            paths["chart"] = self.save_bar_chart(out / "chart.png")
        return paths

    def save_grid(
        self, path: str | os.PathLike, attack: str | None = None, threat: str | None = None
    ) -> Path:
        """PNG grid of clean / adversarial / purified / amplified residual images (see `plots.save_grid`)."""
        return plots.save_grid(self, path, attack=attack, threat=threat)

    def save_bar_chart(self, path: str | os.PathLike) -> Path:
        """Bar chart of robust accuracy per attack and threat (needs matplotlib: the `plots` extra)."""
        return plots.save_bar_chart(self, path)


def summary_table(results: list[EvaluationResult]) -> str:
    """One Markdown table comparing several results: a row per classifier, defence and threat.

    Columns: the number of images, clean accuracy, accuracy through the defence, PSNR of P(x), robust
    accuracy per attack, their mean and per-image worst case (accuracies in %), the mean residual ℓ∞ over
    attacks, and the inference throughput of the classifier behind the defence and of the classifier alone,
    measured side by side in the same pass.
    """
    if not results:
        raise ValueError("summary_table needs at least one EvaluationResult")
    attacks = list(dict.fromkeys(e.attack for r in results for e in r.attacks))
    header = ["classifier", "defence", "threat", "images", "clean", "defended clean", "PSNR", *attacks, "mean",
              "worst", "residual ℓ∞ (/255)", "images/s (defended)", "images/s (classifier)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for result in results:
        by_key = {(e.attack, e.threat): e for e in result.attacks}
        for threat in result.threats:
            entries = [by_key.get((name, threat)) for name in attacks]
            measured = [e for e in entries if e is not None]
            residual = sum(e.residual_linf for e in measured) / len(measured) * 255 if measured else math.nan
            cells = [
                result.classifier, result.defence, threat, str(result.num_images), percent(result.clean_accuracy),
                percent(result.defended_accuracy), "—" if result.psnr is None else f"{result.psnr:.1f}",
                *("—" if e is None else percent(e.robust_accuracy) for e in entries),
                percent(result.mean[threat]), percent(result.worst_case[threat]),
                "—" if math.isnan(residual) else f"{residual:.2f}", f"{result.images_per_second:.0f}",
                f"{result.classifier_images_per_second:.0f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
