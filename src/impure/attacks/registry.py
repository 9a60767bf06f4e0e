"""The one registry of attacks by name, used by the evaluation, the Trainer and the command line: each
name ("pgd", "apgd-dlr", ...; case-insensitive, class names such as "PGD" too) and its settings, scaled to
the threat model's ε."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .._util.checks import check_integer
from .apgd import APGD
from .bim import BIM
from .cw import CW
from .deepfool import DeepFool
from .difgsm import DIFGSM
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .pgd import PGD

__all__ = ["DEFAULT_ATTACKS", "attack_settings", "build_attack", "check_attack_names", "list_attacks"]


def _iterative(eps: float) -> dict[str, Any]:
    # The paper's step: 4/255 at ε 16/255 (ImageNet), 2/255 at ε 8/255 (CIFAR-10), so alpha = ε / 4.
    return {"eps": eps, "alpha": eps / 4}


# name -> (attack class, its keyword arguments at a given ε); other arguments keep the class
# defaults (10 steps, C&W confidence 40, DeepFool 50 iterations with overshoot 0.02, ...).
_SUITE: dict[str, tuple[type, Callable[[float], dict[str, Any]]]] = {
    "fgsm": (FGSM, lambda eps: {"eps": eps}),
    "bim": (BIM, _iterative),
    "pgd": (PGD, lambda eps: {**_iterative(eps), "random_start": True}),
    "mifgsm": (MIFGSM, lambda eps: {**_iterative(eps), "decay": 1.0}),
    "difgsm": (DIFGSM, lambda eps: {**_iterative(eps), "decay": 0.0, "resize_rate": 0.9, "diversity_prob": 0.5}),
    "mdi2fgsm": (DIFGSM, lambda eps: {**_iterative(eps), "decay": 1.0, "resize_rate": 0.9, "diversity_prob": 0.5}),
    "apgd-ce": (APGD, lambda eps: {"eps": eps, "loss": "ce"}),
    "apgd-dlr": (APGD, lambda eps: {"eps": eps, "loss": "dlr"}),
    "cw": (CW, lambda eps: {"eps": eps, "kappa": 40.0}),
    "deepfool": (DeepFool, lambda eps: {"eps": eps, "overshoot": 0.02}),
}
_NOT_SETTINGS = ("self", "model", "seed", "generator")
# Class names that are not attack names themselves (the others, lower-cased, are).
_ALIASES = {"apgd": "apgd-ce"}

# The paper's nine attacks (BIM is available too, by name).
DEFAULT_ATTACKS = ("fgsm", "pgd", "mifgsm", "difgsm", "mdi2fgsm", "apgd-ce", "apgd-dlr", "cw", "deepfool")


def list_attacks() -> list[str]:
    """Names accepted by `build_attack` and `evaluate(attacks=...)`."""
    return list(_SUITE)


def _check_name(name: str) -> str:
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _SUITE:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(_SUITE)}")
    return key


def _attack_class(name: str) -> type:
    return _SUITE[_check_name(name)][0]


def attack_settings(name: str, eps: float, steps: int | None = None, **overrides: Any) -> dict[str, Any]:
    """Every setting attack `name` runs with at `eps` under `build_attack`: the class defaults, the
    suite's choices (alpha = ε/4, momentum for MI-FGSM and M-DI²-FGSM, the APGD loss), then `overrides`.

    Args:
        name: an attack name from `list_attacks()`.
        eps: the ℓ∞ budget on the [0, 1] scale.
        steps: iterations of an iterative attack (default: the class's own); ignored by FGSM.
        overrides: further keyword arguments of the attack class, e.g. `alpha=1/255`.
    """
    cls = _attack_class(name)
    parameters = inspect.signature(cls).parameters
    settings = {key: p.default for key, p in parameters.items() if key not in _NOT_SETTINGS
                and p.default is not inspect.Parameter.empty}  # fmt: skip
    settings.update(_SUITE[_check_name(name)][1](eps))
    if steps is not None:
        check_integer("steps", steps)
        if "steps" in parameters:
            settings["steps"] = steps
    unknown = set(overrides) - set(parameters) | set(overrides) & set(_NOT_SETTINGS)
    if unknown:
        raise ValueError(f"{cls.__name__} has no setting(s) {sorted(unknown)}; it takes {sorted(settings)}")
    return {**settings, **overrides}


def build_attack(name: str, model: nn.Module, eps: float | None = None, steps: int | None = None,
                 **overrides: Any) -> Any:
    """Build the attack `name` from `impure.attacks` against `model`, with `attack_settings`.

    Args:
        name: an attack name from `list_attacks()`, e.g. "pgd" or "apgd-dlr" (or a class name, "PGD").
        model: the model whose gradients the attack follows (images in [0, 1] -> logits).
        eps: the ℓ∞ budget on the [0, 1] scale (default: the class's, 8/255).
        steps: iterations of an iterative attack (see `attack_settings`).
        overrides: further keyword arguments of the attack class.
    """
    if eps is None:
        eps = inspect.signature(_attack_class(name)).parameters["eps"].default
    return _attack_class(name)(model, **attack_settings(name, eps, steps, **overrides))


def check_attack_names(names: Sequence[str]) -> list[str]:
    """Canonical names of `names`; a clear error for an unknown one or an empty list."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError(f"give at least one attack; choose from {', '.join(_SUITE)}")
    return list(dict.fromkeys(_check_name(name) for name in names))
