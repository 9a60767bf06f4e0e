"""Training configuration: dataclasses read from TOML or YAML files, with errors for unknown keys."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AdversarialConfig",
    "AttackSpec",
    "DataConfig",
    "FeatureSpec",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "NetworkSpec",
    "OptimConfig",
    "RobustConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "load_config",
]

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _number(value: Any) -> Any:
    """Turn "8/255" into 8 / 255 (TOML and YAML have no arithmetic); leave other values alone."""
    if isinstance(value, str) and (match := _FRACTION.match(value)):
        return float(match.group(1)) / float(match.group(2))
    return value


@dataclass
class NetworkSpec:
    """A frozen network: an `impure.classifiers` name, "torchvision:<name>", "timm:<name>", a file or
    "module:callable" (see `impure.classifiers.resolve_classifier`), with optional local weights."""

    network: str = ""
    weights: str = ""


@dataclass
class FeatureSpec(NetworkSpec):
    """A feature-loss network and its graph nodes with weights.

    For "torchvision:<name>" the raw torchvision model is used (its node names, ImageNet normalisation
    applied first) and an empty `weights` takes its ImageNet weights from the torch hub cache.
    """

    name: str = "vgg"
    nodes: dict[str, float] = field(default_factory=lambda: {"features.38": 30.0, "features.51": 10.0,
                                                             "classifier.1": 10.0})


@dataclass
class AttackSpec:
    """An attack by name (`impure.attacks.list_attacks()`, case-insensitive; class names such as "PGD"
    too), with its keyword arguments ("8/255" allowed)."""

    name: str = "PGD"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> AttackSpec:
        """{"name": "PGD", "eps": "8/255", ...}: every key except `name` is an attack option."""
        if not isinstance(values, dict) or "name" not in values:
            raise ValueError(f"{where} must be a table with a `name` (an attack name such as 'pgd'), "
                             f"got {values!r}")
        options = {k: _number(v) for k, v in values.items() if k != "name"}
        return cls(name=str(values["name"]), options=options)


@dataclass
class ModelConfig:
    """The purifier to train: a new one from `preset` (+ `overrides`) or a saved one from `init`."""

    preset: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str = ""  # a `save_pretrained` folder or a Hub/bundled name, e.g. the pre-training run's model


@dataclass
class DataConfig:
    """Clean training and validation images (paths relative to the current directory)."""

    train: str = ""  # an .npz, the CIFAR-10 JPEG archive, or an image folder (see impure.data.open_dataset)
    val: str = ""  # labelled validation images; empty: no validation
    train_limit: int = 0  # use only the first N training images (0: all)
    val_limit: int = 256  # validate on the first N images (0: all)
    image_size: int = 0  # resize image-folder images to this side (0: keep)
    hflip: bool = True  # random horizontal flips
    crop_padding: int = 0  # random translations of up to this many pixels (reflection padding)
    # Random resized crops, the reference pre-training's multi-size crops: each sample's crop covers a random
    # fraction in [low, high] of the image area (aspect 3/4 to 4/3), resized back to full size; (1, 1): off.
    crop_scale: tuple[float, float] = (1.0, 1.0)
    num_workers: int = 0  # DataLoader worker processes that decode batches


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then cosine decay or a constant rate with a cool-down; sizes are per
    process and micro-step."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # images per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1.5e-4  # peak learning rate
    min_lr: float = 0.0  # final learning rate of the schedule
    warmup_steps: int = 100
    # "cosine" decays from the end of the warm-up to `steps`; "constant" holds the peak until the last
    # `cooldown_steps`, then decays linearly: such a run may be extended (`steps` raised) on resume
    # as long as its cool-down has not started.
    schedule: str = "cosine"
    cooldown_steps: int = 0
    # Exponential moving average of the weights (timm's ModelEmaV3), 0: off. The EMA weights are the
    # ones validated and saved as the model; it starts from the initial weights.
    ema_decay: float = 0.0
    # Warm the EMA up (timm's: decay 1 - (1 + step)^(-2/3), capped at `ema_decay`), so that a run from random
    # weights does not carry its random start for thousands of steps (at 0.998, 17 % of it after 900 steps).
    ema_warmup: bool = False
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # not applied to norms, biases, tokens and other 1-d parameters
    grad_clip: float = 0.0  # max global gradient norm (0: off)


@dataclass
class LossConfig:
    """Weights and networks of `impure.training.losses.PurificationLoss`."""

    pixel_weight: float = 1.0
    pixel_space: str = "normalized"  # "normalized" (the purifier's mean/std, the paper's) or "pixel"
    features: list[FeatureSpec] = field(default_factory=list)
    mixing: bool = True  # feature/LPIPS terms on patch-mixed images (fine-tuning)
    lpips_weight: float = 0.0
    lpips_net: str = "alex"
    lpips_pretrained: bool = True  # False: random LPIPS backbone (tests only)
    classifier: NetworkSpec = field(default_factory=NetworkSpec)
    classifier_weight: float = 0.0
    classifier_mode: str = "ce"  # "ce" with labels, or "kl" to the classifier's clean prediction


@dataclass
class AdversarialConfig:
    """Fine-tuning inputs: saved shards, or attacks run on the fly against the classifiers."""

    shards: list[str] = field(default_factory=list)  # folders written by `impure make-adversarial`
    classifiers: list[NetworkSpec] = field(default_factory=list)
    attacks: list[AttackSpec] = field(default_factory=list)


@dataclass
class RobustConfig:
    """The robust stage (AToP-style adversarial fine-tuning through the whole pipeline): each step attacks
    `PurifiedClassifier(current purifier, frozen classifier)` with exact gradients, then trains the purifier
    on the paper's terms (`loss`, clean targets) plus `ce_weight` x the classifier's cross-entropy on the
    purified adversarial images. With several classifiers, each step uses the next in turn."""

    classifiers: list[NetworkSpec] = field(default_factory=list)
    attack: AttackSpec = field(default_factory=lambda: AttackSpec("pgd", {"eps": 8 / 255, "alpha": 2 / 255,
                                                                          "steps": 5}))
    eot_samples: int = 1  # EOT passes over the purifier's noise per attack step (1: off)
    ce_weight: float = 1.0


@dataclass
class ValidationConfig:
    """What the periodic validation measures besides reconstruction error and PSNR."""

    classifier: NetworkSpec = field(default_factory=NetworkSpec)  # purified accuracy if given
    attack: AttackSpec | None = None  # also on adversarial validation images (grey-box), made once
    white_box_limit: int = 0  # > 0: also this many images attacked through the current purifier (white-box)
    batch_size: int = 128


@dataclass
class LogConfig:
    """How often to log, validate and checkpoint (in optimizer steps; 0: only at the end)."""

    every: int = 10
    val_every: int = 0
    checkpoint_every: int = 100
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = False  # also write the logged numbers as TensorBoard scalars into output_dir/tensorboard


@dataclass
class TrainConfig:
    """One run: `stage` "pretrain" (clean self-reconstruction) or "finetune" (adversarial -> clean)."""

    stage: str = "pretrain"
    output_dir: str = "runs/impure"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto" (fp32 on CPU, bf16 or fp16 on GPU), "fp32", "bf16", "fp16"
    compile: bool = False  # torch.compile the purifier (pays on GPUs; slower on a 2-core CPU, see docs)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        """Raise `ValueError` naming the first inconsistent setting."""
        if self.stage not in ("pretrain", "finetune", "robust"):
            raise ValueError(f"stage must be 'pretrain', 'finetune' or 'robust', got {self.stage!r}")
        if self.stage == "robust":
            if not self.robust.classifiers or not all(spec.network for spec in self.robust.classifiers):
                raise ValueError("stage 'robust' needs robust.classifiers: the frozen classifier(s) whose "
                                 "pipeline with the purifier is attacked (e.g. [{ network = 'cifar_resnet20', "
                                 "weights = '...' }])")
            if self.robust.eot_samples < 1 or self.robust.ce_weight < 0:
                raise ValueError(f"robust.eot_samples must be >= 1 and robust.ce_weight >= 0, got "
                                 f"{self.robust.eot_samples} and {self.robust.ce_weight}")
        if bool(self.model.preset) == bool(self.model.init):
            raise ValueError("set exactly one of model.preset (a new purifier) and model.init (a saved one)")
        if self.model.init and self.model.overrides:
            raise ValueError("model.overrides only apply to model.preset; a saved model keeps its config")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        optim = self.optim
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(optim, name) < 1:
                raise ValueError(f"optim.{name} must be at least 1, got {getattr(optim, name)}")
        if not 0 <= optim.warmup_steps <= optim.steps:
            raise ValueError(f"optim.warmup_steps must be in [0, steps={optim.steps}], "
                             f"got {optim.warmup_steps}")
        if optim.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {optim.schedule!r}")
        if not 0 <= optim.cooldown_steps <= optim.steps - optim.warmup_steps:
            raise ValueError(f"optim.cooldown_steps must be in [0, steps - warmup_steps = "
                             f"{optim.steps - optim.warmup_steps}], got {optim.cooldown_steps}")
        if optim.cooldown_steps and optim.schedule != "constant":
            raise ValueError("optim.cooldown_steps applies to optim.schedule = 'constant'")
        if not 0 <= optim.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {optim.ema_decay}")
        if optim.lr <= 0 or not 0 <= optim.min_lr <= optim.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={optim.lr}, min_lr={optim.min_lr}")
        low, high = self.data.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"data.crop_scale must be two fractions of the image area with 0 < low <= high <= 1, "
                             f"got {list(self.data.crop_scale)}")
        if self.data.crop_padding < 0:
            raise ValueError(f"data.crop_padding must be >= 0, got {self.data.crop_padding}")
        if self.loss.pixel_space not in ("normalized", "pixel"):
            raise ValueError(f"loss.pixel_space must be 'normalized' or 'pixel', "
                             f"got {self.loss.pixel_space!r}")
        if self.loss.classifier_weight and not self.loss.classifier.network:
            raise ValueError("loss.classifier_weight is set but loss.classifier.network is empty")
        if not self.data.train and not (self.stage == "finetune" and self.adversarial.shards):
            raise ValueError("data.train must name the training images")
        if self.stage == "finetune" and not self.adversarial.shards and not (
                self.adversarial.classifiers and self.adversarial.attacks):
            raise ValueError("fine-tuning needs adversarial inputs: set adversarial.shards, or "
                             "adversarial.classifiers and adversarial.attacks to attack on the fly")
        if self.validation.attack is not None and not self.validation.classifier.network:
            raise ValueError("validation.attack needs validation.classifier to attack")
        if self.validation.white_box_limit < 0 or (self.validation.white_box_limit and self.validation.attack is None):
            raise ValueError(f"validation.white_box_limit must be >= 0 and needs validation.attack, got "
                             f"{self.validation.white_box_limit}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain values (attack options flattened back into their tables)."""
        values = dataclasses.asdict(self)
        flatten = lambda spec: {"name": spec["name"], **spec["options"]}  # noqa: E731
        values["adversarial"]["attacks"] = [flatten(a) for a in values["adversarial"]["attacks"]]
        values["robust"]["attack"] = flatten(values["robust"]["attack"])
        if values["validation"]["attack"] is not None:
            values["validation"]["attack"] = flatten(values["validation"]["attack"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build and validate from nested mappings; an unknown key is an error naming it and its section."""
        config = _build(cls, values, "config")
        config.validate()
        return config


def _build(kind: type, values: Any, where: str) -> Any:
    """Recursively map `values` onto the dataclass `kind`."""
    if kind is AttackSpec:
        return AttackSpec.from_dict(values, where)
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a table of settings, got {values!r}")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
    built = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in values.items()}
    return kind(**built)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in arguments if a is not type(None))
        origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return [_convert(arguments[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(arguments):
            raise ValueError(f"{where} must be a list of {len(arguments)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(arguments, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a table, got {value!r}")
        return {str(k): _number(v) for k, v in value.items()}
    value = _number(value)
    if hint is float and isinstance(value, str):
        try:  # YAML reads 3e-4 (no decimal point) as a string
            value = float(value)
        except ValueError:
            raise ValueError(f"{where} must be float, got {value!r}") from None
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        # bool is a subclass of int, so `true` must not pass for a number.
        if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
            raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set "section.key=value" overrides in a nested dict (values are parsed as YAML: 3, 1e-4, true, [1, 2]).

    Args:
        values: the config's nested mapping (changed in place and returned).
        overrides: assignments such as "optim.steps=100".
    """
    import yaml

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"an override must look like section.key=value, got {item!r}")
        *sections, name = key.strip().split(".")
        table = values
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise ValueError(f"cannot set {key}: {section} is not a section")
        table[name] = yaml.safe_load(text)
    return values


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a `TrainConfig` from a `.toml`, `.yaml`/`.yml` or `.json` file.

    Args:
        path: the config file.
        overrides: "section.key=value" settings that replace the file's (see `apply_overrides`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as error:  # Python 3.10
            raise ValueError(f"reading {path} needs Python >= 3.11 (tomllib); use a YAML config "
                             "on Python 3.10") from error
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
    elif suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"config {path} must end in .toml, .yaml, .yml or .json")
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a table of settings")
    try:
        return TrainConfig.from_dict(apply_overrides(values, overrides))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
