"""Model cards for purifiers: the README.md that `Purifier.save_pretrained` writes and the Hub renders.

Metadata (library, licence, tags, datasets, the paper, and `model-index` metrics when an evaluation is
given) goes in the YAML header that `huggingface_hub.ModelCard` parses; the body gives the architecture
(from the config), how to load and wrap the purifier, the training recipe when known, and the measured
table with its protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from impure.config import PurifierConfig
from impure.formatting import format_eps, percent

__all__ = ["PAPER_URL", "model_card"]

PAPER_URL = "https://arxiv.org/abs/2311.15339"
_TAGS = {"vit": ["adversarial-purification", "adversarial-robustness", "masked-autoencoder", "vision-transformer",
                 "impure", "arxiv:2311.15339"],
         "conv": ["adversarial-purification", "adversarial-robustness", "blind-spot-network", "cnn", "impure",
                  "arxiv:2311.15339"]}
_DESCRIPTIONS = {
    "vit": ("it hides each group of image patches in turn while the others stay visible, reconstructs every group "
            "in one batched pass of a masked-autoencoder ViT, and merges the reconstructions into a clean image, "
            "in front of any classifier."),
    "conv": ("its convolutional reconstructor hides every image patch from itself and rebuilds all of them in one "
             "pass of a blind-spot network, from the patches around each and the patch's own noised copy, in front "
             "of any classifier."),
}
_DATASETS = {32: ("cifar10", "CIFAR-10"), 224: ("imagenet-1k", "ImageNet-1k")}


def model_card(config: PurifierConfig, *, name: str | None = None,
               evaluation: Any = None,
               training: str | dict[str, Any] | None = None, license: str = "mit",
               dataset: tuple[str, str] | None = None, description: str | None = None,
               sections: Sequence[str] = ()) -> ModelCard:
    """The model card of a purifier with `config`.

    Args:
        config: the purifier's architecture (`purifier.config`).
        name: the name users load it by (e.g. "impure/cifar10" or "org/name"); default a placeholder.
        evaluation: one `EvaluationResult` or a sequence of them (`impure.evaluation.evaluate`, a layer above
            this one: the card reads them by attribute) with this purifier as the defence: their table,
            protocol and `model-index` metrics go on the card.
        training: the training recipe: Markdown text, or a Trainer config (`TrainConfig.to_dict()`), shown
            as the settings that decide the weights.
        license: the licence of the weights (an SPDX id the Hub knows).
        dataset: (Hub dataset id, display name); default CIFAR-10 for 32-px purifiers, ImageNet-1k for 224.
        description: a paragraph under the title (default: what IMPure does).
        sections: more Markdown sections (each with its own `## ` heading), placed before the citation.
    """
    results = [] if evaluation is None else [evaluation] if not isinstance(evaluation, Sequence) else list(evaluation)
    dataset_id, dataset_name = dataset or _DATASETS.get(config.image_size, ("", ""))
    title = name or "my-impure-purifier"
    data = ModelCardData(
        library_name="impure", license=license, tags=list(_TAGS[config.backbone]), pipeline_tag="image-to-image",
        datasets=[dataset_id] if dataset_id else None, model_name=title,
        eval_results=[metric for result in results for metric in _eval_results(result, dataset_id, dataset_name)]
        or None,
    )  # fmt: skip
    parts = [
        f"# {title}",
        description or ("An IMPure purifier (information-mask purification, Liu et al. 2023, "
                        f"[arXiv 2311.15339]({PAPER_URL})): {_DESCRIPTIONS[config.backbone]}"),
        "## Use", _usage(title),
        "## Architecture", _architecture(config),
    ]
    if training is not None:
        parts += ["## Training", training if isinstance(training, str) else _training_settings(training)]
    if results:
        parts += ["## Evaluation", *(_evaluation_section(result) for result in results)]
    parts += [*sections, "## Citation", _CITATION]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(parts) + "\n"
    return ModelCard(content)


def _usage(name: str) -> str:
    return f"""```python
from impure import PurifiedClassifier, Purifier

purifier = Purifier.from_pretrained("{name}")
defended = PurifiedClassifier(purifier, classifier).eval()  # classifier: images in [0, 1] -> logits
logits = defended(images)                                   # images: (N, 3, H, W) in [0, 1]
```

`impure purify photo.png -o purified/ --purifier {name}` purifies image files; `impure evaluate` measures
robustness (grey-box and white-box). Install with `pip install impure`."""


def _architecture(config: PurifierConfig) -> str:
    if config.backbone == "conv":
        return _table(_conv_architecture(config))
    rows = [
        ("input", f"{config.image_size} x {config.image_size} RGB in [0, 1], patches of {config.patch_size} px"),
        ("encoder", f"ViT, width {config.encoder_width}, depth {config.encoder_depth}, {config.encoder_heads} heads"),
        ("decoder", f"width {config.decoder_width}, depth {config.decoder_depth}, {config.decoder_heads} heads"),
        ("patch groups", f"{config.num_groups} ({config.partition} partition), hidden by {config.mask_mode}"),
        ("noise timesteps", f"image {config.image_noise_t}, features {config.feature_noise_t} of "
                            f"{config.noise_steps} (training: {tuple(config.train_image_noise_t)}, "
                            f"{tuple(config.train_feature_noise_t)})"),
        ("fusion taps", ", ".join(map(str, config.fusion_taps)) or "none"),
        ("output convolution", "yes" if config.output_conv else "no"),
    ]  # fmt: skip
    if config.noisy_skip:
        rows.append(("noisy-pixel skip", "a per-patch linear map of the hidden patch's noised pixels, weighted by "
                                         f"the noise level (sigma_data {config.skip_sigma_data:g})"))
    if config.pixel_head_width:
        rows.append(("pixel head", f"{config.pixel_head_width} channels, three 3 x 3 convolutions per decoder copy, "
                                   "a correction to the hidden group's pixels"))
    return _table(rows)


def _conv_architecture(config: PurifierConfig) -> list[tuple[str, str]]:
    """The architecture table's rows for the conv backbone (`impure.model.blindspot`)."""
    copy = ("each patch's own noised copy, embedded and noised again, joins the head" if config.mask_mode == "noise"
            else "none: a patch's output never depends on its own pixels")
    return [
        ("input", f"{config.image_size} x {config.image_size} RGB in [0, 1], patches of {config.patch_size} px"),
        ("reconstructor", f"blind-spot CNN over the patch grid: four rotated branches of {config.conv_depth} upward "
                          f"3 x 3 convolutions, width {config.conv_width}, each seeing only the half-plane beside a "
                          "patch, combined by 1 x 1 convolutions"),
        ("hidden at once", "every patch, from itself (all in one pass)"),
        ("own-pixel path", copy),
        ("noise timesteps", f"image {config.image_noise_t}, features {config.feature_noise_t} of "
                            f"{config.noise_steps} (training: {tuple(config.train_image_noise_t)}, "
                            f"{tuple(config.train_feature_noise_t)})"),
        ("output convolution", "yes" if config.output_conv else "no"),
    ]


def _table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows) + \
        "\n\nThe full configuration is `config.json`; `Purifier.set_strength(s)` scales both timesteps."


def _training_settings(config: dict[str, Any]) -> str:
    """The settings of a Trainer config that decide the weights, as a list."""
    keep = {"stage": None, "model": ("init", "preset"),
            "data": ("train", "image_size", "hflip", "crop_padding", "crop_scale"),
            "optim": ("steps", "batch_size", "grad_accum", "lr", "schedule", "warmup_steps", "ema_decay"),
            "loss": ("pixel_weight", "mixing", "classifier_weight"), "robust": ("attack", "ce_weight")}
    lines = []
    for section, keys in keep.items():
        value = config.get(section)
        if value in (None, {}, []):
            continue
        if keys is None:
            lines.append(f"- `{section}`: {value}")
            continue
        settings = ", ".join(f"{key} = {value[key]}" for key in keys if value.get(key) not in (None, "", [], {}))
        if settings:
            lines.append(f"- `{section}`: {settings}")
    if config.get("stage") != "robust":
        lines = [line for line in lines if not line.startswith("- `robust`")]
    return "Trained with `impure train` (the Trainer); the settings that decide the weights:\n\n" + "\n".join(lines)


def _evaluation_section(result: Any) -> str:
    threats = ", ".join(result.threats)
    protocol = (f"Protocol: {result.classifier} behind the purifier on {result.data} ({result.num_images} images), "
                f"ℓ∞ ε = {format_eps(result.eps)}, threat models {threats} (grey-box: attacks on the bare classifier; "
                f"white-box: exact gradients through the purifier, EOT over {result.eot_samples} draws), seed "
                f"{result.seed}, one purification per image; `impure.evaluation.evaluate`.")
    lines = [protocol, "", "| attack | " + " | ".join(result.threats) + " |", "|---|" + "---:|" * len(result.threats)]
    by_key = {(e.attack, e.threat): e.robust_accuracy for e in result.attacks}
    lines.append("| clean (through the purifier) | " + " | ".join(percent(result.defended_accuracy)
                                                              for _ in result.threats) + " |")
    for attack in dict.fromkeys(e.attack for e in result.attacks):
        cells = ["—" if (attack, t) not in by_key else percent(by_key[attack, t]) for t in result.threats]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(percent(result.mean[t]) for t in result.threats) + " |")
    psnr = "" if result.psnr is None else f" PSNR of the purified clean images: {result.psnr:.1f} dB."
    return "\n".join(lines) + f"\n\nAccuracy in %; the bare classifier: {percent(result.clean_accuracy)} %.{psnr}"


def _eval_results(result: Any, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """`model-index` entries: clean accuracy through the purifier and the mean robust accuracy per threat."""
    common = {"task_type": "image-classification", "task_name": "Adversarial purification",
              "dataset_type": dataset_id or result.data, "dataset_name": dataset_name or result.data,
              "dataset_split": "test"}
    entries = [EvalResult(metric_type="accuracy", metric_name=f"clean accuracy ({result.classifier})",
                          metric_value=round(100 * result.defended_accuracy, 2), **common)]
    for threat in result.threats:
        attacks = ", ".join(dict.fromkeys(e.attack for e in result.attacks if e.threat == threat))
        entries.append(EvalResult(
            metric_type="accuracy", metric_value=round(100 * result.mean[threat], 2),
            metric_name=(f"{threat} robust accuracy, mean of {attacks}, ε {format_eps(result.eps)} "
                         f"({result.classifier})"),
            **common))
    return entries


_CITATION = """```bibtex
@article{liu2023impure,
  title   = {Adversarial Purification of Information Masking},
  author  = {Liu, Sitong and Lian, Zhichao and Zhang, Shuangquan and Xiao, Liang},
  journal = {arXiv preprint arXiv:2311.15339},
  year    = {2023}
}
```"""
