"""What the robustness and frontier benchmarks share: the shared files, the defence and run options, one
evaluation of a labelled defence, and the atomic Markdown + JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from impure import defences
from impure._util.atomic import atomic_write
from impure.attacks import check_attack_names
from impure.data import load_npz
from impure.evaluation import (
    DEFAULT_ATTACKS,
    EvaluationResult,
    choice_reason,
    choose_by_seed_means,
    evaluate,
    list_attacks,
    seed_means,
    seed_means_table,
)
from impure.formatting import in_255, parse_eps, parse_noise_t

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = Path("data") / "cifar10" / "test_dev.npz"
WEIGHTS = {"cifar_resnet20": "cifar10_resnet20.safetensors", "cifar_resnet56": "cifar10_resnet56.safetensors"}
BASELINES = ("none", "jpeg75", "bits4", "median3")
# Names that stand for several attacks in --attacks.
ATTACK_SETS = {
    "paper": DEFAULT_ATTACKS,  # the paper's nine
    "nine": DEFAULT_ATTACKS,
    "all": tuple(list_attacks()),  # the nine and BIM
    "cheap": ("fgsm", "pgd", "mifgsm", "apgd-dlr"),
}


@dataclass(frozen=True)
class DefenceSpec:
    """One row's defence: where it comes from, its label in the tables, and the purifier's noise timesteps
    (absolute) or strength (relative to its saved timesteps); neither keeps the saved timesteps."""

    source: str  # "none", a baseline name ("jpeg75") or a purifier name or folder
    label: str
    strength: float | None = None  # Purifier.set_strength
    noise_t: tuple[int, int] | None = None  # Purifier.set_noise_t

    def to_dict(self) -> dict:
        """The fields for a report (noise_t only when set, so that earlier reports read the same)."""
        fields = dataclasses.asdict(self)
        if fields["noise_t"] is None:
            del fields["noise_t"]
        return fields


def names(text: str) -> list[str]:
    """Comma-separated names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def attack_names(text: str) -> list[str]:
    """Comma-separated attack names or set names (`ATTACK_SETS`), checked and without repeats."""
    expanded = [attack for name in names(text) for attack in ATTACK_SETS.get(name.lower(), (name,))]
    try:
        return check_attack_names(expanded)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; or a set: {', '.join(ATTACK_SETS)}") from error


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def strengths(text: str) -> tuple[float, ...]:
    """Comma-separated positive purification strengths, e.g. "0.5,0.75,1"."""
    try:
        values = tuple(float(Fraction(item)) for item in names(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"strengths must be numbers like 0.5,1 (got {text!r})") from error
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"strengths must be positive numbers like 0.5,1 (got {text!r})")
    return values


def noise_timesteps(text: str) -> tuple[tuple[int, int], ...]:
    """Comma-separated image/feature noise timesteps, e.g. "80/120,120/180"."""
    try:
        pairs = tuple(parse_noise_t(item) for item in names(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"noise timesteps must look like 80/120[,120/180] (got {text!r})") from error
    if not pairs:
        raise argparse.ArgumentTypeError(f"noise timesteps must look like 80/120[,120/180] (got {text!r})")
    return pairs


class _NewPurifier(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        namespace.purifiers = [*namespace.purifiers,
                               {"source": value, "label": None, "strengths": None, "noise_t": None}]


class _PurifierOption(argparse.Action):
    """--noise-t, --strengths and --label qualify the --purifier before them; --noise-t or --strengths before
    any sets the default."""

    def __call__(self, parser, namespace, value, option_string=None):
        if namespace.purifiers:
            namespace.purifiers[-1][self.dest] = value
        elif self.dest in ("strengths", "noise_t"):
            setattr(namespace, f"default_{self.dest}", value)
        else:
            parser.error(f"{option_string} names the --purifier given before it; put it after one")


def add_defence_arguments(parser: argparse.ArgumentParser) -> None:
    """--defences (baselines), --purifier (repeatable), --noise-t or --strengths, and --label (per purifier)."""
    parser.set_defaults(purifiers=[], default_strengths=None, default_noise_t=None)
    parser.add_argument("--defences", type=names, default=list(BASELINES),
                        help=f"comma-separated baselines: none, jpegQ, bitsB, medianK (default: {','.join(BASELINES)})")
    parser.add_argument("--purifier", action=_NewPurifier, default=argparse.SUPPRESS, metavar="NAME_OR_DIR",
                        help="a purifier name or save_pretrained folder; repeat for several")
    parser.add_argument("--noise-t", dest="noise_t", type=noise_timesteps, action=_PurifierOption,
                        default=argparse.SUPPRESS, metavar="I/F[,I/F...]",
                        help="image/feature noise timesteps (Purifier.set_noise_t) of the --purifier before it, "
                             "one row each, labelled t=I/F; given before any --purifier, the default for all")
    parser.add_argument("--strengths", "--strength", dest="strengths", type=strengths, action=_PurifierOption,
                        default=argparse.SUPPRESS, metavar="S[,S...]",
                        help="strengths (Purifier.set_strength: relative to the purifier's saved timesteps) of "
                             "the --purifier before it, one row each, labelled s=S; prefer --noise-t")
    parser.add_argument("--label", action=_PurifierOption, default=argparse.SUPPRESS,
                        help="the table label of the --purifier before it (default: its folder's name)")  # fmt: skip


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the shared files are, ε, image count, attack steps, batch size, device, seed, threads, output."""
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data and model folder")
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="e.g. 8/255")
    parser.add_argument("--start", type=int, default=0,
                        help="skip the first N images of test_dev.npz, e.g. 250 to report on images 250-499 "
                             "after choosing settings on 0-249 (default 0)")
    parser.add_argument("--limit", type=positive_int, help="the first N images of test_dev.npz after --start "
                                                           "(default: all)")
    parser.add_argument("--steps", type=positive_int, help="iterations of every iterative attack (default per attack)")
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--device", default="auto")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=seed_list,
                       help="comma-separated, e.g. 0,1,2: one run per seed, the first seed's report in --out and "
                            "each other's in --out/seedN, then seed-means.md and .json in --out (the means over "
                            "seeds, which compare stochastic purifiers better than one noise draw)")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def seed_list(text: str) -> list[int]:
    """Comma-separated distinct whole numbers."""
    try:
        seeds = [int(name) for name in names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are whole numbers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct seeds, got {text!r}")
    return seeds


def for_each_seed(args: argparse.Namespace, argv: list[str] | None,
                  run: Callable[[Path], list[EvaluationResult]]) -> None:  # fmt: skip
    """Call `run(out_dir)` once per seed of --seeds (else once, for --seed) with `args.seed` set: the first
    seed's report goes into --out, each other's into --out/seedN; with several seeds, the table of their
    means (`seed_means_table`) and the purifier the selection rule picks from them (`choose_by_seed_means`) are
    printed and written as seed-means.md and .json ("chosen") into --out."""
    seeds = args.seeds or [args.seed]
    results_by_seed = {}
    start = time.perf_counter()
    for index, seed in enumerate(seeds):
        args.seed = seed
        results_by_seed[seed] = run(args.out if index == 0 else args.out / f"seed{seed}")
    if len(seeds) == 1:
        return
    minutes = (time.perf_counter() - start) / 60
    first = results_by_seed[seeds[0]][0]
    markdown = (
        f"Means over seeds {', '.join(map(str, seeds))} (each seed: a draw of the purifiers' noise and the "
        f"attacks' random starts) on {first.num_images} images of test_dev.npz from image {args.start}, ℓ∞ "
        f"ε = {in_255(args.eps)}, grey-box; mean and worst case over each seed's attacks; device "
        f"{first.device}, {minutes:.1f} min in all. Per-seed reports: this folder (seed {seeds[0]}) and "
        f"{', '.join(f'seed{seed}/' for seed in seeds[1:])}.\n\n" + seed_means_table(results_by_seed)
    )  # fmt: skip
    rows = seed_means(results_by_seed)
    chosen = None
    if any(row["noise_t"] is not None for row in rows):
        chosen, sentence = choice_sentence(rows)
        markdown += "\n" + sentence + "\n"
    payload = {"argv": sys.argv[1:] if argv is None else argv, "minutes": minutes, "seeds": seeds,
               "rows": rows, "chosen": chosen}  # fmt: skip
    print(markdown)
    atomic_write(args.out / "seed-means.md", markdown)
    atomic_write(args.out / "seed-means.json", json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out / 'seed-means'}.md and seed-means.json", file=sys.stderr)


def choice_sentence(rows: list[dict]) -> tuple[str, str]:
    """The purifier that `choose_by_seed_means` picks from `seed_means` rows, and one sentence saying why."""
    chosen, competing = choose_by_seed_means(rows)
    rule = "By the selection rule on these means (`impure.evaluation.choose_by_seed_means`)"
    return chosen["defence"], f"{rule}, {chosen['defence']} is chosen: {choice_reason(chosen, competing)}."


def default_label(source: str) -> str:
    """A purifier's table label: its folder's name (a Trainer's `model` folder: the run's), else `source`."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return source
    path = path.resolve()
    return path.parent.name if path.name == "model" else path.name


def defence_specs(args: argparse.Namespace) -> list[DefenceSpec]:
    """The baselines of --defences, then each --purifier at each of its strengths."""
    specs = [DefenceSpec(name, name.lower()) for name in args.defences]
    for entry in args.purifiers:
        label = entry["label"] or default_label(entry["source"])
        noise_t = entry["noise_t"] or (None if entry["strengths"] else args.default_noise_t)
        chosen = entry["strengths"] or (None if entry["noise_t"] else args.default_strengths)
        try:
            defences.check_strength_or_noise_t(min(chosen) if chosen else None,
                                                   noise_t[0] if noise_t else None,
                                               names=("--strengths", "--noise-t"))
        except ValueError as error:
            raise ValueError(f"--purifier {entry['source']}: {error}") from None
        if noise_t:
            specs += [DefenceSpec(entry["source"], f"{label} t={image}/{feature}", noise_t=(image, feature))
                      for image, feature in noise_t]
        elif chosen:
            specs += [DefenceSpec(entry["source"], f"{label} s={value:g}", value) for value in chosen]
        else:
            specs.append(DefenceSpec(entry["source"], label))
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"two rows would be labelled {repeated}; give each --purifier its own --label")
    return specs


def load_defence(spec: DefenceSpec) -> nn.Module | None:
    """The defence module of `spec` (None for "none"), at its noise timesteps or strength
    (`impure.defences.load_defence`)."""
    return defences.load_defence(spec.source, strength=spec.strength, noise_t=spec.noise_t)


def prepare(args: argparse.Namespace, classifiers: list[str]) -> tuple[Path, list[DefenceSpec]] | None:
    """Set the thread count and check the run: the path of test_dev.npz and the defences' rows, or None
    (with the reason on stderr) when the data is missing, a classifier is unknown or the rows clash."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.shared / DATA
    if not data.is_file():
        print(f"the shared data is missing ({data}); pass --shared DIR", file=sys.stderr)
        return None
    try:
        check_classifiers(classifiers)
        return data, defence_specs(args)
    except ValueError as error:
        print(error, file=sys.stderr)
        return None


def evaluate_defence(args: argparse.Namespace, data: Path, classifier: str, spec: DefenceSpec,
                     defence: nn.Module | None, *, attacks: list[str], threat: str | tuple[str, ...],
                     limit: int | None, cache: dict) -> EvaluationResult:  # fmt: skip
    """`evaluate` one shared classifier behind `defence` with the run options of `args`, labelled as `spec`.

    `cache` holds the adversarial examples made on the bare classifier: pass one dict per classifier so
    that every defence is scored on the same grey-box examples, each attack made once.
    """
    threat_text = threat if isinstance(threat, str) else ", ".join(threat)
    print(f"== {classifier} + {spec.label} ({threat_text}, {limit or 'all'} images from {args.start})",
          file=sys.stderr)
    source: Path | tuple[torch.Tensor, torch.Tensor] = data
    if args.start:
        images, labels = load_npz(data)
        end = None if limit is None else args.start + limit
        source, limit = (images[args.start:end], labels[args.start:end]), None
    result = evaluate(
        classifier, source, defence, attacks=attacks, threat=threat, eps=args.eps, steps=args.steps,
        batch_size=args.batch_size, device=args.device, eot_samples=getattr(args, "eot_samples", None),
        seed=args.seed, limit=limit, classifier_weights=args.shared / "models" / WEIGHTS[classifier],
        adversarial_cache=cache, progress=not args.no_progress,
    )  # fmt: skip
    return dataclasses.replace(result, defence=spec.label)


def check_classifiers(requested: list[str]) -> None:
    unknown = [name for name in requested if name not in WEIGHTS]
    if unknown:
        raise ValueError(f"unknown classifier(s) {unknown}; choose from {', '.join(WEIGHTS)}")


def write_report(out_dir: Path, stem: str, markdown: str, *, argv: list[str] | None, minutes: float,
                 specs: list[DefenceSpec], results: list[EvaluationResult]) -> None:  # fmt: skip
    """Write `stem`.md and `stem`.json (the command line, the defences and every result) into `out_dir`
    atomically: an old report survives a failed write."""
    payload = {
        "argv": sys.argv[1:] if argv is None else argv, "minutes": minutes,
        "defences": [spec.to_dict() for spec in specs], "results": [r.to_dict() for r in results],
    }  # fmt: skip
    atomic_write(out_dir / f"{stem}.md", markdown)
    atomic_write(out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out_dir / stem}.md and {stem}.json", file=sys.stderr)
