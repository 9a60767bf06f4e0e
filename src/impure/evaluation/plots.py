"""Pictures of an evaluation: an example grid (Pillow) and a robust-accuracy bar chart (matplotlib).

A leaf: it draws what it is given and imports none of the result types (`EvaluationResult`,
`ConvergencePoint`), which call it."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from impure._util.atomic import atomic_write
from impure._util.versions import import_torchvision
from impure.formatting import in_255

__all__ = ["residual_image", "save_bar_chart", "save_convergence_plot", "save_grid"]

_ROWS = ("clean", "adversarial", "purified", "residual")


def residual_image(residual: torch.Tensor, eps: float) -> torch.Tensor:
    """Map a residual in [-eps, eps] to a visible image in [0, 1]: grey is zero, ±eps saturates."""
    return (0.5 + residual / (2 * eps)).clamp(0, 1)


def save_grid(
    result: Any, path: str | os.PathLike, attack: str | None = None, threat: str | None = None
) -> Path:
    """Save a PNG whose rows are clean, adversarial, purified-adversarial and amplified-residual images.

    The residual row shows P(x_adv) - P(x) scaled so that ±eps is full contrast.

    Args:
        result: an `EvaluationResult` of a run with `keep_examples > 0`.
        path: the PNG file to write.
        attack: which attack's examples to show (default: the first measured).
        threat: which threat model's examples to show (default: the first measured).
    """
    if not result.examples:
        raise ValueError(
            "this result holds no example images; run evaluate(..., keep_examples=8) to keep some"
        )
    keys = [key for key in result.examples if (attack is None or key.split("/")[1] == attack)
            and (threat is None or key.split("/")[0] == threat)]  # fmt: skip
    if not keys:
        raise ValueError(
            f"no examples for attack={attack!r}, threat={threat!r}; kept: {sorted(result.examples)}"
        )
    example = result.examples[keys[0]]
    rows = [example["clean"], example["adversarial"], example["purified"],
            residual_image(example["residual"], result.eps)]  # fmt: skip
    count = rows[0].shape[0]
    grid = import_torchvision().utils.make_grid(torch.cat(rows).float().cpu(), nrow=count, padding=2, pad_value=1.0)
    # Nearest-neighbour upscaling keeps 32-pixel images legible without smoothing the perturbation away.
    scale = max(1, 128 // rows[0].shape[-1])
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels).resize((grid.shape[2] * scale, grid.shape[1] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def save_bar_chart(result: Any, path: str | os.PathLike) -> Path:
    """Save a bar chart (PNG, SVG or PDF by suffix) of an `EvaluationResult`'s robust accuracy per attack, one
    bar per threat.

    Needs matplotlib, an optional extra: `pip install "impure[plots]"`.
    """
    plt = _pyplot("the bar chart")
    attacks = list(dict.fromkeys(e.attack for e in result.attacks))
    by_key = {(e.attack, e.threat): e.robust_accuracy for e in result.attacks}
    width = 0.8 / max(1, len(result.threats))
    figure, axes = plt.subplots(figsize=(max(5.0, 0.9 * len(attacks) + 2), 3.5))
    try:
        for index, threat in enumerate(result.threats):
            positions = [i + (index - (len(result.threats) - 1) / 2) * width for i in range(len(attacks))]
            heights = [100 * by_key.get((name, threat), float("nan")) for name in attacks]
            axes.bar(positions, heights, width=width, label=threat)
        axes.axhline(100 * result.defended_accuracy, color="black", linestyle="--", linewidth=1,
                     label="clean (defended)")  # fmt: skip
        axes.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
        axes.set_ylabel("robust accuracy (%)")
        axes.set_ylim(0, 100)
        axes.set_title(f"{result.classifier} + {result.defence}, ε = {in_255(result.eps)}")
        axes.legend(fontsize="small")
        return _save_figure(figure, path)
    finally:
        plt.close(figure)


def save_convergence_plot(points: Sequence[Any], path: str | os.PathLike, title: str = "") -> Path:
    """Save the convergence curves of `ConvergencePoint`s (PNG, SVG or PDF by suffix): white-box robust
    accuracy against attack steps (at the fewest EOT draws measured) and against EOT draws (at the steps of
    the EOT sweep).

    Needs matplotlib, an optional extra: `pip install "impure[plots]"`.
    """
    plt = _pyplot("the convergence plot")
    by_eot: dict[int, list[Any]] = {}
    by_steps: dict[int, list[Any]] = {}
    for point in points:
        by_eot.setdefault(point.eot_samples, []).append(point)
        by_steps.setdefault(point.steps, []).append(point)
    step_curve = sorted(by_eot[min(by_eot)], key=lambda p: p.steps)
    eot_curve = sorted(max(by_steps.values(), key=len), key=lambda p: p.eot_samples)
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    try:
        for axes, curve, key, label in ((left, step_curve, "steps", f"attack steps (EOT {step_curve[0].eot_samples})"),
                                        (right, eot_curve, "eot_samples", f"EOT draws ({eot_curve[0].steps} steps)")):
            xs = [getattr(p, key) for p in curve]
            axes.plot(xs, [100 * p.robust_accuracy for p in curve], marker="o", label="one draw")
            if all(p.robust_every_draw is not None for p in curve):
                axes.plot(xs, [100 * p.robust_every_draw for p in curve], marker="s", label="every draw")
            axes.set_xscale("log")
            axes.set_xticks(xs, [str(x) for x in xs])
            axes.minorticks_off()
            axes.set_xlabel(label)
            axes.grid(alpha=0.3)
        left.set_ylabel("white-box robust accuracy (%)")
        left.set_ylim(0, max(5.0, 1.15 * max(100 * p.robust_accuracy for p in points)))
        if title:
            figure.suptitle(title, fontsize="medium")
        return _save_figure(figure, path)
    finally:
        plt.close(figure)


def _pyplot(what: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f'{what} needs matplotlib, which is not installed; run `pip install "impure[plots]"` '
            "(or `pip install matplotlib`), or leave it out"
        ) from error
    return plt


def _save_figure(figure, path: str | os.PathLike) -> Path:
    figure.tight_layout()
    buffer = io.BytesIO()
    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    figure.savefig(buffer, format=suffix, dpi=120)
    return atomic_write(path, buffer.getvalue())
