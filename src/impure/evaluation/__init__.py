"""Honest robustness evaluation of a classifier behind a defence: grey-box and white-box, with reports."""

from impure.attacks.registry import DEFAULT_ATTACKS, attack_settings, build_attack, list_attacks
from impure.evaluation.adaptive import (
    AdaptiveReport,
    ConvergencePoint,
    SanityCheck,
    adaptive_evaluation,
    convergence,
    sanity_checks,
)
from impure.evaluation.frontier import (
    choice_reason,
    choose_by_seed_means,
    frontier_table,
    pareto_front,
    seed_means,
    seed_means_table,
)
from impure.evaluation.report import AttackResult, EvaluationResult, summary_table
from impure.evaluation.runner import DEFAULT_EOT_SAMPLES, THREATS, EvaluationSettings, evaluate
from impure.evaluation.sources import load_data, resolve_classifier, resolve_purifier
from impure.metrics import l2_norm, linf_norm, psnr

__all__ = [
    "AdaptiveReport",
    "ConvergencePoint",
    "SanityCheck",
    "adaptive_evaluation",
    "convergence",
    "sanity_checks",
    "DEFAULT_ATTACKS",
    "DEFAULT_EOT_SAMPLES",
    "EvaluationSettings",
    "THREATS",
    "AttackResult",
    "EvaluationResult",
    "attack_settings",
    "build_attack",
    "evaluate",
    "choice_reason",
    "choose_by_seed_means",
    "frontier_table",
    "l2_norm",
    "linf_norm",
    "list_attacks",
    "load_data",
    "pareto_front",
    "psnr",
    "resolve_classifier",
    "resolve_purifier",
    "seed_means",
    "seed_means_table",
    "summary_table",
]
