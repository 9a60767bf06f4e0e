"""`evaluate`: robust accuracy of a classifier behind a defence, under grey-box and white-box attacks."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from impure._util.atomic import atomic_path
from impure._util.checks import check_integer
from impure._util.distributed import DistributedContext, current_context
from impure._util.modes import eval_mode
from impure.attacks.eot import DEFAULT_EOT_SAMPLES, adaptive_target
from impure.attacks.registry import DEFAULT_ATTACKS, attack_settings, build_attack, check_attack_names
from impure.device import select_device, select_dtype
from impure.evaluation.report import AttackResult, EvaluationResult
from impure.evaluation.sources import load_data, noise_timesteps, resolve_classifier, resolve_purifier
from impure.metrics import correct, l2_norm, linf_norm, psnr

__all__ = ["DEFAULT_EOT_SAMPLES", "THREATS", "EvaluationSettings", "evaluate"]

THREATS = ("grey-box", "white-box", "bpda")
_THREAT_SETS = {"both": ("grey-box", "white-box"), "all": THREATS}
_PSNR_CAP = 100.0  # dB given to an image the defence leaves unchanged, so the mean stays finite
_KEPT_BYTES = 2 * 2**30  # purified clean images kept between the passes; beyond it they are purified again


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation measures: the threat models, the attacks and their budgets, EOT and the limits.

    Every field is also a keyword of `evaluate`, e.g. `evaluate(..., attacks=["pgd"], eps=4/255)`.
    """

    attacks: Sequence[str] = DEFAULT_ATTACKS  # attack names (`impure.attacks.list_attacks()`)
    threat: str | Sequence[str] = "both"  # "grey-box", "white-box", "bpda", "both", "all", or a list
    eps: float = 8 / 255  # the ℓ∞ budget on the [0, 1] scale
    steps: int | None = None  # iterations of every iterative attack (default: each attack's own)
    attack_options: dict[str, dict[str, Any]] | None = None  # extra keyword arguments per attack name
    eot_samples: int | None = None  # EOT passes per white-box step for a stochastic defence (default 8)
    batch_size: int = 100  # images per batch, and the most images x EOT passes per forward pass
    limit: int | None = None  # evaluate only the first `limit` images
    seed: int | None = 0  # makes the run repeatable; None draws one, which the result records
    keep_examples: int = 0  # example images kept per attack for `result.save_grid`
    resubmissions: int = 0  # > 0, stochastic defence: also the images correct in every one of that many draws
    dtype: str = "fp32"  # precision of a purifier given by name (`impure.select_dtype`)
    progress: bool = True  # show a progress bar

    def check(self) -> tuple[tuple[str, ...], list[str], dict[str, dict[str, Any]]]:
        """The threat models, the canonical attack names and the per-attack options; errors name the field."""
        threats = _parse_threats(self.threat)
        names = check_attack_names(self.attacks)
        _check_arguments(self.eps, self.batch_size, self.eot_samples, self.keep_examples, self.resubmissions)
        options = {key.lower(): value for key, value in (self.attack_options or {}).items()}
        unknown = set(options) - set(names)
        if unknown:
            raise ValueError(f"attack_options names attacks that are not evaluated: {sorted(unknown)}")
        return threats, names, options


def evaluate(
    classifier: Any,
    data: Any,
    purifier: Any = None,
    settings: EvaluationSettings | None = None,
    *,
    device: str | torch.device = "auto",
    image_size: int | None = None,
    data_root: str | os.PathLike | None = None,
    classifier_weights: str | os.PathLike | None = None,
    adversarial_cache: dict | None = None,
    strength: float | None = None,
    noise_t: tuple[int, int] | None = None,
    partial_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> EvaluationResult:
    """Measure clean and robust accuracy of `classifier` behind `purifier` under ℓ∞ attacks.

    Grey-box: adversarial examples are made on the bare classifier, then purified (the paper's setting).
    White-box: they are made on `PurifiedClassifier(purifier, classifier)` with exact gradients and, for
    a stochastic defence, EOT over its noise. "bpda" attacks through an identity backward instead. Robust
    accuracy counts all images: an image counts as robust only if the defended classifier gets both the
    clean and the adversarial version right, so attacks through the defence skip the images it gets wrong
    when clean (as AutoAttack does; for a weak purifier that saves most of the cost). A stochastic defence
    is scored by one purification per image, with the same noise for x and x_adv (so the residual measures
    what the attack leaves, not the defence's own noise); `seed` makes the whole run repeatable. Without a
    defence all threat models coincide and each attack runs once.

    Args:
        classifier: an `nn.Module` (images in [0, 1] -> logits) or a name/path (see `resolve_classifier`).
        data: (images, labels) tensors, an `.npz`, an image folder or a torchvision dataset name.
        purifier: None, an `nn.Module`, a baseline name ("jpeg75", "bits4", "median3") or a name/folder
            for `Purifier.from_pretrained`.
        settings: an `EvaluationSettings`; its fields may also be given (or overridden) as keywords,
            listed under Other Parameters.
        device: "auto", "cuda", "mps", "cpu" or a torch.device; the models are moved there.
        image_size: resize image-folder data to this side.
        data_root: where torchvision datasets are kept (default ~/.cache/impure/datasets).
        classifier_weights: weights file for a classifier given by architecture name.
        strength: for a purifier given by name, purify at this multiple of its saved noise timesteps.
        noise_t: for a purifier given by name, purify at these (image, feature) noise timesteps instead.
        adversarial_cache: a dict that stores the adversarial examples made on the bare classifier (grey-box
            and no defence); pass the same dict to several calls with the same classifier and data, e.g.
            to compare defences, and each such attack runs once.
        partial_dir: a folder for per-batch partial results: each finished batch of each pass is saved there
            (atomically), and a later call with the same models, data and settings reuses them, so that an
            interrupted evaluation resumes where it stopped and ends with the same result. Needs a fixed `seed`.

    Other Parameters:
        attacks: attack names (see `impure.evaluation.list_attacks()`); default the paper's nine.
        threat: "grey-box", "white-box", "bpda", "both" (grey-box and white-box), "all", or a list.
        eps: ℓ∞ budget on the [0, 1] scale.
        steps: iterations of every iterative attack (default: each attack's own, 10; DeepFool 50).
        attack_options: extra keyword arguments per attack name, e.g. {"pgd": {"alpha": 1/255}}; a "steps"
            there overrides `steps` for that attack.
        batch_size: images per batch; for EOT, the most images x passes in one forward pass, so that
            memory does not grow with `eot_samples`.
        eot_samples: gradient samples per white-box attack step for a stochastic defence (default 8);
            a deterministic defence always uses 1.
        seed: makes the run repeatable (attack starts, the defence's noise); None draws one, which the
            result records.
        limit: evaluate only the first `limit` images.
        keep_examples: keep this many example images per attack for `result.save_grid`.
        resubmissions: for a stochastic defence, purify each adversarial image this many more times with
            independent noise and report, beside the single-draw robust accuracy, the fraction of images
            classified correctly in every draw (`AttackResult.robust_every_draw`): an attacker may submit
            the same image again until the defence's randomness lets it through.
        progress: show a progress bar.
        dtype: precision of a purifier given by name, as `impure.select_dtype` reads it ("fp32", "bf16",
            "fp16", "auto"); its output is cast back to float32 for the classifier.
    """
    known = {f.name for f in dataclasses.fields(EvaluationSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"evaluate() got unknown setting(s) {unknown}; EvaluationSettings has {sorted(known)}")
    settings = dataclasses.replace(settings or EvaluationSettings(), **overrides)
    threats, names, options = settings.check()
    dev = select_device(device)
    model, classifier_name = resolve_classifier(classifier, classifier_weights)
    defence, defence_name = resolve_purifier(purifier, dtype=select_dtype(settings.dtype, dev), strength=strength,
                                             noise_t=noise_t)
    images, labels, data_name = load_data(data, limit=settings.limit, image_size=image_size, data_root=data_root)
    shard = current_context()
    base_seed = shard.agree(settings.seed if settings.seed is not None else int(torch.randint(0, 2**31 - 1, ())))
    attack_config = {name: attack_settings(name, settings.eps, **_attack_kwargs(settings, options, name))
                     for name in names}
    size = settings.batch_size
    batches = [(images[i: i + size], labels[i: i + size]) for i in range(0, len(images), size)]
    runs = threats if defence is not None else threats[:1]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    modules = [m for m in (model, defence) if m is not None]
    own = shard.share(range(len(batches)))
    total = len(own) * (1 + len(runs) * len(names))
    with (eval_mode(*modules), _forked_rng(dev),
          tqdm(total=total, desc="evaluate", unit="batch", disable=not settings.progress or not shard.is_main)
          as bar):  # fmt: skip
        for module in modules:
            module.to(dev)
        stochastic = defence is not None and _is_stochastic(defence, batches[0][0][:4].to(dev), base_seed)
        eot = (settings.eot_samples or DEFAULT_EOT_SAMPLES) if stochastic else 1
        store = None
        if partial_dir is not None:
            identity = {"classifier": classifier_name, "defence": defence_name, "data": data_name,
                        "images": len(images), "seed": base_seed,
                        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "progress"},
                        "attacks": attack_config, "eot": eot, "noise_t": noise_timesteps(defence),
                        "weights": [_weights_digest(module) for module in modules]}  # fmt: skip
            store = _PartialStore(Path(partial_dir), identity)
        run = _Run(model, defence, batches, own, base_seed, dev, bar, shard, store)
        run.resubmissions = settings.resubmissions if stochastic else 0
        clean = run.clean_pass()
        cache_id = (classifier_name, data_name, len(images), size, base_seed)
        results, robust, examples = _attack_passes(run, runs, names, settings, options, attack_config, eot,
                                                   clean["defended_correct"], adversarial_cache, cache_id)
    if defence is None:
        _copy_to_other_threats(threats, runs[0], names, results, robust, examples, run.per_image)
    return EvaluationResult(
        classifier=classifier_name, defence=defence_name, data=data_name, num_images=len(images),
        eps=settings.eps, threats=list(threats), clean_accuracy=clean["clean_accuracy"],
        resubmissions=run.resubmissions, noise_t=noise_timesteps(defence),
        defended_accuracy=clean["defended_accuracy"],
        psnr=clean["psnr"], images_per_second=clean["images_per_second"],
        classifier_images_per_second=clean["classifier_images_per_second"],
        peak_memory_mb=_peak_memory_mb(dev),
        device=str(dev), seed=base_seed, eot_samples=eot, stochastic_defence=stochastic,
        settings={"attacks": attack_config, "batch_size": size}, attacks=results,
        worst_case={t: float(torch.stack([robust[t, n] for n in names]).all(0).float().mean())
                    for t in threats},
        mean={t: sum(float(robust[t, n].float().mean()) for n in names) / len(names) for t in threats},
        examples=examples, per_image=run.per_image,
    )  # fmt: skip


def _attack_passes(run: _Run, runs: Sequence[str], names: list[str], settings: EvaluationSettings,
                   options: dict[str, dict[str, Any]], attack_config: dict[str, dict[str, Any]], eot: int,
                   defended_correct: torch.Tensor, adversarial_cache: dict | None,
                   cache_id: tuple) -> tuple[list[AttackResult], dict, dict]:
    """Every attack under every threat model: the results, the per-image robustness and kept examples."""
    results, robust, examples = [], {}, {}
    for threat_name in runs:
        attack_model = _attack_model(threat_name, run.model, run.defence, eot, settings.batch_size)
        for name in names:
            attack = build_attack(name, attack_model, settings.eps, **_attack_kwargs(settings, options, name))
            on_bare = attack_model is run.model
            cache = adversarial_cache if on_bare else None
            key = (*cache_id, name, repr(sorted(attack_config[name].items())))
            entry, robust[threat_name, name], kept = run.attack_pass(
                attack, threat_name, name, defended_correct, settings.keep_examples, on_bare, cache, key
            )
            results.append(entry)
            if kept:
                examples[f"{threat_name}/{name}"] = kept
    return results, robust, examples


def _attack_kwargs(settings: EvaluationSettings, options: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The steps and extra options of attack `name`: its own "steps" in `attack_options` wins over `steps`."""
    extra = dict(options.get(name, {}))
    return {"steps": extra.pop("steps", settings.steps), **extra}


def _copy_to_other_threats(threats: tuple[str, ...], ran: str, names: list[str], results: list[AttackResult],
                           robust: dict, examples: dict, per_image: dict) -> None:
    """Without a defence every threat model is the same attack on the same model: copy the one that ran."""
    for threat_name in threats[1:]:
        results += [AttackResult(**{**vars(e), "threat": threat_name}) for e in results if e.threat == ran]
        robust.update({(threat_name, name): robust[ran, name] for name in names})
        first = [(k.split("/")[1], v) for k, v in examples.items() if k.startswith(f"{ran}/")]
        examples.update({f"{threat_name}/{name}": v for name, v in first})
        per_image.update({f"{threat_name}/{key[len(ran) + 1:]}": value for key, value in list(per_image.items())
                          if key.startswith(f"{ran}/")})


class _Run:
    """The batches of one evaluation and the passes over them: this process's share of the batches, each
    pass's per-batch records (from `store` when an earlier run saved them), gathered from every process."""

    def __init__(self, model: nn.Module, defence: nn.Module | None, batches: list, own: list[int], seed: int,
                 device: torch.device, bar: tqdm, shard: DistributedContext,
                 store: _PartialStore | None) -> None:  # fmt: skip
        self.model, self.defence, self.batches = model, defence, batches
        self.own = own  # the indices of the batches this process evaluates (`shard.share`)
        self.seed, self.device, self.bar, self.shard, self.store = seed, device, bar, shard, store
        self.purified_clean: dict[int, torch.Tensor] = {}  # batch -> P(x) of the clean pass, reused by attacks
        self.resubmissions = 0  # extra independent purifications of each adversarial image
        self.per_image: dict[str, torch.Tensor] = {}  # see EvaluationResult.per_image

    def purify(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        """The defence's output with the noise of `batch`: equal noise for clean and adversarial images."""
        if self.defence is None:
            return images
        torch.manual_seed(_derive(self.seed, "purify", batch))
        return self.defence(images)

    def _records(self, stage: str, compute: Any) -> list[dict[str, Any]]:
        """`compute(batch)` for each of this process's batches (or its saved record), gathered from all processes:
        the records of every batch, in batch order."""
        records = {}
        for index in self.own:
            record = self.store.load(stage, index) if self.store else None
            if record is None:
                record = compute(index)
                if self.store:
                    self.store.save(stage, index, record)
            records[index] = record
            self.bar.update()
        merged = {index: record for part in self.shard.gather(records) for index, record in part.items()}
        return [merged[index] for index in range(len(self.batches))]

    @torch.no_grad()
    def _clean_batch(self, index: int) -> dict[str, Any]:
        images = self.batches[index][0].to(self.device)
        start = _now(self.device)
        bare = self.model(images).argmax(dim=1)
        middle = _now(self.device)
        purified = self.purify(images, index)
        defended = self.model(purified).argmax(dim=1)
        end = _now(self.device)
        self._keep_purified(index, purified)
        return {"bare": bare.cpu(), "defended": defended.cpu(), "bare_seconds": middle - start,
                "defended_seconds": end - middle, "psnr": psnr(purified, images).clamp(max=_PSNR_CAP).cpu()}

    def _keep_purified(self, index: int, purified: torch.Tensor) -> None:
        """Keep P(x) of batch `index` for the attack passes while they fit in `_KEPT_BYTES` (ImageNet's 50,000
        validation images would take 30 GB); the rest is purified again, with the same noise, when needed."""
        kept = sum(tensor.nbytes for tensor in self.purified_clean.values())
        if self.defence is not None and kept + purified.nbytes <= _KEPT_BYTES:
            self.purified_clean[index] = purified.cpu()

    @torch.no_grad()
    def _purified_clean(self, index: int, images: torch.Tensor) -> torch.Tensor:
        """P(x) of batch `index` as the clean pass made it (made again, with its noise, if it was not kept)."""
        if self.defence is None:
            return images
        if index not in self.purified_clean:
            purified = self.purify(images, index)
            self._keep_purified(index, purified)
            return purified
        return self.purified_clean[index].to(self.device)

    @torch.no_grad()
    def clean_pass(self) -> dict[str, Any]:
        """Accuracy with and without the defence, PSNR of P(x), and inference throughput."""
        self.bar.set_postfix_str("clean")
        if self.own:
            warm = self.batches[self.own[0]][0].to(self.device)
            self.model(self.purify(warm, 0))  # first calls set up kernels; keep them out of the timings
        records = self._records("clean", self._clean_batch)
        count = sum(len(b[1]) for b in self.batches)
        labels = torch.cat([b[1] for b in self.batches])
        bare_predictions = torch.cat([record["bare"] for record in records])
        defended_predictions = torch.cat([record["defended"] for record in records])
        defended_correct = defended_predictions == labels
        self.per_image.update(labels=labels.cpu(), clean_prediction=bare_predictions,
                              defended_prediction=defended_predictions)
        return {
            "clean_accuracy": float((bare_predictions == labels).float().mean()),
            "defended_accuracy": float(defended_correct.float().mean()),
            "defended_correct": defended_correct,
            "psnr": None if self.defence is None else float(torch.cat([r["psnr"] for r in records]).mean()),
            "classifier_images_per_second": count / max(sum(r["bare_seconds"] for r in records), 1e-9),
            "images_per_second": count / max(sum(r["defended_seconds"] for r in records), 1e-9),
        }

    def attack_pass(self, attack: Any, threat: str, name: str, defended_correct: torch.Tensor, keep: int,
                    on_bare: bool, cache: dict | None, key: tuple,
                    ) -> tuple[AttackResult, torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """Attack every batch, purify once, and score; returns the result, per-image robustness, examples.

        Attacks on the bare classifier draw the same random numbers whatever the threat label, so that
        grey-box examples equal the undefended ones (and can come from `cache`, keyed by `key` + batch).
        Attacks through the defence skip the images it misclassifies when clean: they count as failures
        whatever the attack does (as AutoAttack does), and attacking through a purifier is the costly part.
        The residual and perturbation statistics cover the attacked images.
        """
        self.bar.set_postfix_str(f"{threat} {name}")
        ends = torch.tensor([len(b[1]) for b in self.batches]).cumsum(0).tolist()

        def attack_batch(index: int) -> dict[str, Any]:
            start = time.perf_counter()
            images, labels = (tensor.to(self.device) for tensor in self.batches[index])
            attacked = defended_correct[ends[index] - len(labels) : ends[index]].to(self.device)
            if on_bare:
                attacked = torch.ones_like(attacked)
            if cache is not None and (*key, index) in cache:
                adversarial = cache[(*key, index)].to(self.device)
            else:
                torch.manual_seed(_derive(self.seed, "bare" if on_bare else threat, name, index))
                adversarial = images.clone()
                if attacked.any():
                    adversarial[attacked] = attack(images[attacked], labels[attacked]).detach()
                if cache is not None:
                    cache[(*key, index)] = adversarial.cpu()
            with torch.no_grad():
                # The same noise as the clean pass, so the same P(x): reuse it rather than purify again.
                purified_clean = self._purified_clean(index, images)
                purified = self.purify(adversarial, index)
                prediction = self.model(purified).argmax(dim=1).cpu()
                robust = prediction == labels.cpu()
                every_draw = robust & self._survives_resubmission(adversarial, labels, threat, name, index)
            residual, perturbation = purified - purified_clean, adversarial - images
            record = {"prediction": prediction, "robust": robust, "every_draw": every_draw,
                      "norms": torch.stack([linf_norm(perturbation), l2_norm(perturbation), linf_norm(residual),
                                            l2_norm(residual), attacked.float()], dim=1).cpu()}  # fmt: skip
            if index == 0 and keep:
                record["kept"] = {"clean": images[:keep].cpu(), "adversarial": adversarial[:keep].cpu(),
                                  "purified_clean": purified_clean[:keep].cpu(), "purified": purified[:keep].cpu(),
                                  "residual": residual[:keep].cpu()}  # fmt: skip
            record["seconds"] = time.perf_counter() - start
            return record

        records = self._records(f"{threat}/{name}", attack_batch)
        robust_all = torch.cat([r["robust"] for r in records]) & defended_correct.cpu()
        every_draw_all = torch.cat([r["every_draw"] for r in records]) & defended_correct.cpu()
        norms = torch.cat([r["norms"] for r in records])
        prefix = f"{threat}/{name}/"
        self.per_image[prefix + "prediction"] = torch.cat([r["prediction"] for r in records])
        for column, key in enumerate(("perturbation_linf", "perturbation_l2", "residual_linf", "residual_l2")):
            self.per_image[prefix + key] = norms[:, column]
        chosen = norms[norms[:, 4] > 0]  # the attacked images
        linf, l2, perturbation = chosen[:, 2], chosen[:, 3], chosen[:, 0]
        none_attacked = linf.numel() == 0  # the defence misclassifies every clean image
        entry = AttackResult(
            attack=name, threat=threat, robust_accuracy=float(robust_all.float().mean()),
            residual_linf=0.0 if none_attacked else float(linf.mean()),
            residual_l2=0.0 if none_attacked else float(l2.mean()),
            perturbation_linf=0.0 if none_attacked else float(perturbation.max()),
            seconds=sum(r["seconds"] for r in records),
            robust_every_draw=float(every_draw_all.float().mean()) if self.resubmissions else None,
        )  # fmt: skip
        return entry, robust_all, records[0].get("kept", {})

    @torch.no_grad()
    def _survives_resubmission(self, adversarial: torch.Tensor, labels: torch.Tensor, threat: str, name: str,
                               batch: int) -> torch.Tensor:
        """Boolean (N,) on the CPU: classified correctly in each of `resubmissions` independent draws."""
        survived = torch.ones(labels.shape[0], dtype=torch.bool)
        for draw in range(self.resubmissions):
            torch.manual_seed(_derive(self.seed, "resubmit", threat, name, batch, draw))
            survived &= correct(self.model(self.defence(adversarial)), labels).cpu()
        return survived


def _attack_model(threat: str, model: nn.Module, defence: nn.Module | None, eot: int,
                  batch_size: int) -> nn.Module:
    """The model an attack under `threat` differentiates; EOT passes run `batch_size` images at a time."""
    if threat == "grey-box" or defence is None:
        return model
    return adaptive_target(defence, model, gradient="full" if threat == "white-box" else "bpda", eot_samples=eot,
                           batch_size=batch_size)


@torch.no_grad()
def _is_stochastic(defence: nn.Module, images: torch.Tensor, seed: int) -> bool:
    """Whether the defence's output changes with the random state (then white-box attacks use EOT)."""
    torch.manual_seed(_derive(seed, "probe", 0))
    first = defence(images)
    torch.manual_seed(_derive(seed, "probe", 1))
    return not torch.equal(first, defence(images))


def _parse_threats(threat: str | Sequence[str]) -> tuple[str, ...]:
    requested = [threat] if isinstance(threat, str) else list(threat)
    expanded: list[str] = []
    for item in requested:
        key = str(item).lower().replace("_", "-")
        if key not in THREATS and key not in _THREAT_SETS:
            raise ValueError(f"unknown threat model {item!r}; use {', '.join(THREATS)}, 'both' or 'all'")
        expanded += _THREAT_SETS.get(key, (key,))
    if not expanded:
        raise ValueError("give at least one threat model")
    return tuple(dict.fromkeys(expanded))


def _check_arguments(eps: float, batch_size: int, eot_samples: int | None, keep_examples: int,
                     resubmissions: int) -> None:
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps <= 1:
        raise ValueError(
            f"eps must be a number in (0, 1] on the [0, 1] pixel scale (8/255 = 0.031), got {eps!r}"
        )
    for name, value, low in (("batch_size", batch_size, 1), ("keep_examples", keep_examples, 0),
                             ("resubmissions", resubmissions, 0)):
        check_integer(name, value, low)
    if eot_samples is not None:
        check_integer("eot_samples", eot_samples)


class _PartialStore:
    """Per-batch records of one evaluation, saved atomically in a subfolder named by a digest of everything that
    decides them (models' weights, data, seed, settings): records of another evaluation are never read."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        self.folder = folder / digest

    def _path(self, stage: str, index: int) -> Path:
        return self.folder / f"{stage.replace('/', '--')}-{index:06d}.pt"

    def load(self, stage: str, index: int) -> dict[str, Any] | None:
        path = self._path(stage, index)
        return torch.load(path, weights_only=True) if path.is_file() else None

    def save(self, stage: str, index: int, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(stage, index)) as temporary:
            torch.save(record, temporary)


def _weights_digest(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (its class name when it has none, as the baselines)."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _derive(seed: int, *keys: Any) -> int:
    """A seed for one stage of the run, independent of which other stages run."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def _forked_rng(device: torch.device) -> Iterator[None]:
    """Seeded stages inside must not change the caller's global random state."""
    # "cuda" without an index is the current device (each torchrun process's own), not GPU 0.
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory on CUDA; otherwise the process's peak resident memory (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
