"""How numbers are written and read back in reports, cards, plots and the command line: accuracies in
percent, ℓ∞ budgets in 1/255 steps."""

from __future__ import annotations

from fractions import Fraction

__all__ = ["format_eps", "in_255", "parse_eps", "parse_noise_t", "percent"]


def percent(value: float) -> str:
    """A fraction in [0, 1] as a percentage with one decimal, without the sign: 0.8234 -> "82.3"."""
    return f"{100 * value:.1f}"


def format_eps(eps: float) -> str:
    """An ℓ∞ budget on the [0, 1] pixel scale: "8/255" when it is a whole number of 1/255 steps, otherwise
    its value with four significant digits ("0.03")."""
    scaled = eps * 255
    return f"{round(scaled)}/255" if abs(scaled - round(scaled)) < 1e-6 else f"{eps:.4g}"


def in_255(value: float) -> str:
    """A pixel distance on the [0, 1] scale in 1/255 steps, three significant digits: 0.0313 -> "7.98/255"."""
    return f"{value * 255:.3g}/255"


def parse_eps(text: str) -> float:
    """An ℓ∞ budget given as a fraction ("8/255") or a number ("0.0314") on the [0, 1] pixel scale.

    Raises:
        ValueError: the text is not a number, or the budget lies outside (0, 1].
    """
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"invalid eps {text!r}: give a fraction like 8/255 or a number") from error
    if not 0 < value <= 1:
        hint = f"; did you mean {text}/255?" if value > 1 and "/" not in str(text) else ""
        raise ValueError(f"eps must lie in (0, 1] on the [0, 1] pixel scale, got {text}{hint}")
    return value


def parse_noise_t(text: str) -> tuple[int, int]:
    """Image/feature noise timesteps written as "80/120".

    Raises:
        ValueError: the text is not two whole numbers separated by "/".
    """
    image, sep, feature = str(text).strip().partition("/")
    if sep and image.strip().lstrip("-").isdigit() and feature.strip().lstrip("-").isdigit():
        if int(image) < 0 or int(feature) < 0:
            raise ValueError(f"noise timesteps must be whole numbers from 0 (no noise) up, e.g. 80/120, got {text!r}")
    if not (sep and image.strip().isdigit() and feature.strip().isdigit()):
        raise ValueError(f"noise timesteps must look like 80/120 (image/feature), got {text!r}")
    return int(image), int(feature)
