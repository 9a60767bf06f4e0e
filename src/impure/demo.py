"""The offline demo behind `impure demo`: attack a CIFAR-10 classifier with PGD, purify, measure, draw a grid."""

from __future__ import annotations

import io
import os
import textwrap
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ._util.atomic import atomic_write
from ._util.checks import check_integer
from .attacks import attack_settings
from .classifiers import bundled_classifier_card, resolve_classifier
from .data import ImageFolderDataset, load_npz
from .device import select_device
from .formatting import in_255

if TYPE_CHECKING:
    from .hub import Purifier

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_PURIFIER",
    "GRID_ROWS",
    "SAMPLES_PATH",
    "DemoResult",
    "grid_font",
    "load_demo_images",
    "run_demo",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_PURIFIER = "impure/cifar10"
DEFAULT_CLASSIFIER = "impure/cifar10-resnet20-heldout"  # no purifier was trained against it
# 20 CIFAR-10 test images shipped with the package; see samples/README.md for their provenance.
SAMPLES_PATH = Path(__file__).parent / "samples" / "cifar10_test_samples.npz"
IMAGE_SIZE = 32  # images of a folder are resized to CIFAR-10's size

# Grid layout, in pixels: images are upscaled (nearest) to about TILE, framed green (classified correctly)
# or red (wrong), and separated by GAP; row names sit in the LEFT margin, class names in the TOP one.
# Each tile has its predicted class in a CAPTION strip below it; TOP holds the title, accuracies and classes.
GRID_COLUMNS = 10
# Pixels: a tile's side, its frame, the gap between columns, the prediction's line under a tile, the gap between rows
# (wider than that line's distance to its own tile, so a prediction reads as its tile's), the margins.
TILE, FRAME, GAP, CAPTION, ROW_GAP, LEFT, TOP, BOTTOM = 128, 3, 6, 19, 14, 150, 66, 28
# Pillow's default font at 13 px keeps its spaces visible (at 10 px they vanish); a drawn arrow and its gap: 16 px.
FONT_SIZE, LINE, _ARROW_WIDTH = 13, 18, 16
GRID_ROWS = ("clean", "adversarial", "perturbation", "purified clean", "purified adv.")  # the grid's rows, top down
_EXAMPLE_ROWS = ("clean", "adversarial", "purified_clean", "purified")
_ACCURACY_NAMES = {"clean": "clean", "attacked": "attacked, no defence", "purified_clean": "purified clean",
                   "purified_attacked": "purified attacked"}
_GREEN, _RED, _GREY = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1), (0.6, 0.6, 0.6)


def witness_note(classifier: str) -> str | None:
    """For the bundled demo classifier, how its accuracy under grey-box PGD through the purifier compares with
    the README table's ResNet-56 in the same measurement (from its card, `bundled_classifier_card`); else None."""
    if classifier != DEFAULT_CLASSIFIER:
        return None
    measured = bundled_classifier_card(classifier).get("through_purifier")
    if measured is None:
        return None
    ours = measured["accuracy"][classifier]["purified_adversarial"]
    table = measured["accuracy"]["cifar_resnet56"]["purified_adversarial"]
    verdict = ("a weaker witness than the table's classifier, so the purified attack does worse here than in the "
               "README's table" if ours < table - 5 else "about as strong a witness as the table's classifier")
    return (f"{classifier} is a ResNet-20 that no purifier was trained against: under {measured['attack']} "
            f"through {measured['purifier']} it keeps {ours:.1f} % ({measured['images']}), where ResNet-56 (the "
            f"classifier of the README's table) keeps {table:.1f} % in that same measurement; {verdict}. "
            "docs/training.md says why")


def load_demo_images(source: str | os.PathLike | None = None,
                     limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Labelled CIFAR-10 images for the demo.

    Args:
        source: None for the 20 sample images shipped with impure; a folder with one subfolder per class,
            named after the CIFAR-10 classes (airplane, automobile, ...; images resized to 32 x 32); or an
            `.npz` with `images` (uint8 N x H x W x 3) and integer `labels` in CIFAR-10 order.
        limit: keep only the first `limit` images.

    Returns:
        images (N, 3, H, W) float in [0, 1], labels (N,) int64, and a description of the source.
    """
    if limit is not None:
        check_integer("limit", limit)
    if source is None:
        images, labels = load_npz(SAMPLES_PATH)
        description = f"{len(labels)} CIFAR-10 test images shipped with impure"
    else:
        path = Path(source)
        if path.is_dir():
            dataset = ImageFolderDataset(path, image_size=IMAGE_SIZE)
            if dataset.classes is None:
                raise ValueError(f"{path} has no class subfolders: put the images in subfolders named after "
                                 f"CIFAR-10 classes ({', '.join(CIFAR10_CLASSES)}), or give an .npz")
            images, labels = dataset.get_batch(range(min(limit or len(dataset), len(dataset))))
            labels = _class_indices(dataset.classes, str(path))[labels]
        elif not path.exists():
            raise FileNotFoundError(f"no such image folder or .npz file: {path}")
        elif path.suffix.lower() == ".npz":
            images, labels = load_npz(path)
            _check_npz_classes(path)
        else:
            raise ValueError(f"cannot read {path}: give a folder of class subfolders or an .npz with "
                             "`images` and `labels`")
        description = f"{min(limit or len(labels), len(labels))} images from {path}"
    if len(labels) == 0:
        raise ValueError(f"{source} holds no images")
    if int(labels.min()) < 0 or int(labels.max()) >= len(CIFAR10_CLASSES):
        raise ValueError(f"{source}: labels must be CIFAR-10 class indices in [0, 9], got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return images[:limit], labels[:limit], description


def _class_indices(names: list[str], source: str) -> torch.Tensor:
    """CIFAR-10 index of each class-folder name, for remapping a folder's own label order."""
    unknown = [name for name in names if name.lower() not in CIFAR10_CLASSES]
    if unknown:
        raise ValueError(f"{source}: subfolders {unknown} are not CIFAR-10 classes; name them after "
                         f"{', '.join(CIFAR10_CLASSES)}")
    return torch.tensor([CIFAR10_CLASSES.index(name.lower()) for name in names])


def _check_npz_classes(path: Path) -> None:
    with np.load(path, allow_pickle=False) as archive:
        if "classes" in archive.files and tuple(str(c) for c in archive["classes"]) != CIFAR10_CLASSES:
            raise ValueError(f"{path}: its `classes` {list(archive['classes'])} are not CIFAR-10's "
                             f"({', '.join(CIFAR10_CLASSES)}, in this order)")


@dataclass
class DemoResult:
    """Per-image outcomes of a demo run; the accuracies and norms are summaries of them.

    `predictions` holds the predicted classes (N,) on "clean", "attacked" (no defence), "purified_clean" and
    "purified_attacked" images; the `*_correct` fields are those compared with the labels. The norms are
    per image, (N,), on the [0, 1] pixel scale: the perturbation is x_adv - x, the residual P(x_adv) - P(x)
    (both purified with the same noise). `examples` keeps the first images ("clean", "adversarial",
    "purified_clean", "purified") for the grid.
    """

    source: str
    purifier: str
    classifier: str
    device: str
    eps: float
    alpha: float
    steps: int
    strength: float
    labels: torch.Tensor
    predictions: dict[str, torch.Tensor]
    clean_correct: torch.Tensor
    attacked_correct: torch.Tensor
    purified_clean_correct: torch.Tensor
    purified_attacked_correct: torch.Tensor
    perturbation_linf: torch.Tensor
    perturbation_l2: torch.Tensor
    residual_linf: torch.Tensor
    residual_l2: torch.Tensor
    seconds: dict[str, float]
    examples: dict[str, torch.Tensor]
    noise_t: tuple[int, int] | None = None  # the purifier's (image, feature) noise timesteps, noise mode only

    @property
    def count(self) -> int:
        return len(self.labels)

    @property
    def _noise_text(self) -> str:
        return "" if self.noise_t is None else f" at noise t {self.noise_t[0]}/{self.noise_t[1]}"

    @property
    def accuracies(self) -> dict[str, float]:
        """Top-1 accuracy on clean, attacked (no defence), purified clean and purified attacked images."""
        return {name: float(getattr(self, f"{name}_correct").float().mean())
                for name in ("clean", "attacked", "purified_clean", "purified_attacked")}

    def report(self) -> str:
        """A short plain-text report: the setting, the four accuracies, the perturbation norms, the timings."""
        rows = [("clean", self.clean_correct), ("attacked, no defence", self.attacked_correct),
                ("purified clean", self.purified_clean_correct),
                ("purified attacked", self.purified_attacked_correct)]
        total = sum(self.seconds.values())
        stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        ratio = float(self.residual_l2.mean() / self.perturbation_l2.mean().clamp(min=1e-12))
        lines = [
            f"images      {self.source}",
            f"classifier  {self.classifier}",
            f"purifier    {self.purifier} (strength {self.strength:g}){self._noise_text}",
            f"attack      PGD on the classifier alone (grey-box): eps {in_255(self.eps)}, "
            f"{self.steps} steps of {in_255(self.alpha)}",
            "",
            *(f"  {name:<22}{float(c.float().mean()):>7.1%}  ({int(c.sum())}/{self.count})" for name, c in rows),
            f"  ({self.count} images: a demonstration, each accuracy within about "
            f"±{196 * (0.25 / self.count) ** 0.5:.0f} points; the README's table measures 250 test images, "
            "through a ResNet-56 the purifier never saw)",
            *(textwrap.wrap(f"({witness})", 110, initial_indent="  ", subsequent_indent="   ")
              if (witness := witness_note(self.classifier)) else []),
            "",
            f"perturbation  x_adv - x         L-inf max {in_255(float(self.perturbation_linf.max()))}, "
            f"L2 mean {float(self.perturbation_l2.mean()):.3f}",
            f"residual      P(x_adv) - P(x)   L-inf max {in_255(float(self.residual_linf.max()))}, "
            f"L2 mean {float(self.residual_l2.mean()):.3f} ({ratio:.2f} x the perturbation's)",
            f"time          {total:.1f} s on {self.device}: {stages}",
        ]
        return "\n".join(lines)

    def grid_image(self) -> Image.Image:
        """The grid as a Pillow image that tells the story on its own: a title with the setting and the four
        accuracies; rows clean, adversarial, perturbation (amplified so that +-eps is full contrast, grey is
        zero), purified clean and purified adversarial; one column per example image, headed by its true
        class, each tile framed green (classified correctly) or red (wrong) over the class predicted."""
        clean, adversarial, purified_clean, purified = (self.examples[k].float().cpu() for k in _EXAMPLE_ROWS)
        count, size = clean.shape[0], clean.shape[-1]
        perturbation = (0.5 + (adversarial - clean) / (2 * self.eps)).clamp(0, 1)
        tiles = torch.stack([clean, adversarial, perturbation, purified_clean, purified])  # (5, K, 3, H, W)
        scale = max(1, TILE // size)
        tiles = tiles.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        row_outcomes = [self.clean_correct, self.attacked_correct, None, self.purified_clean_correct,
                        self.purified_attacked_correct]
        outcome = torch.stack([torch.zeros(count, dtype=torch.bool) if o is None else o[:count].cpu()
                               for o in row_outcomes])
        colours = torch.where(outcome[..., None], torch.tensor(_GREEN), torch.tensor(_RED))
        colours[2] = torch.tensor(_GREY)  # the perturbation row has no prediction
        framed = colours[..., None, None].expand(*tiles.shape[:3], *(s + 2 * FRAME for s in tiles.shape[-2:]))
        framed = framed.clone()
        framed[..., FRAME:-FRAME, FRAME:-FRAME] = tiles
        cells = F.pad(framed, (0, GAP, 0, CAPTION + ROW_GAP), value=1.0)  # (5, K, 3, h, w), caption space below
        rows, _, _, height, width = cells.shape
        body = cells.permute(2, 0, 3, 1, 4).reshape(3, rows * height, count * width)
        pixels = (body.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        font = grid_font()
        accuracy = self.accuracies
        lines = [
            f"{self.classifier} behind the purifier {self.purifier} (strength {self.strength:g}){self._noise_text}: "
            f"PGD on the classifier alone (grey-box), eps {in_255(self.eps)}, {self.steps} steps, {self.count} images",
            "accuracy: " + "   ".join(f"{name} {accuracy[key]:.0%}" for key, name in _ACCURACY_NAMES.items()),
        ]
        # The legend: the frames, then (after a drawn arrow, which the font lacks) what the arrows point at.
        frames = "frame: green = classified correctly, red = wrong; "
        arrows = f"the class predicted for the tile above it; perturbation amplified {0.5 / self.eps:.0f}x (grey = 0)"
        legend_width = font.getlength(frames) + _ARROW_WIDTH + font.getlength(arrows)
        text_width = round(max(legend_width, *(font.getlength(text) for text in lines)))
        canvas_width = max(LEFT + pixels.shape[1], 16 + text_width)  # few columns: fit the text
        canvas = Image.new("RGB", (canvas_width, TOP + pixels.shape[0] + BOTTOM), "white")
        canvas.paste(Image.fromarray(pixels), (LEFT, TOP))
        draw = ImageDraw.Draw(canvas)
        for index, text in enumerate(lines):
            draw.text((8, 6 + LINE * index), text, fill="black", font=font)
        for row, name in enumerate(GRID_ROWS):
            draw.text((8, TOP + row * height + height // 2 - 6), name, fill="black", font=font)
        row_predictions = [self.predictions[k] for k in ("clean", "attacked")] + [None] + \
                          [self.predictions[k] for k in ("purified_clean", "purified_attacked")]
        tile_height = height - CAPTION - ROW_GAP
        for column, label in enumerate(self.labels[:count].tolist()):
            x = LEFT + column * width + FRAME
            draw.text((x, TOP - LINE), f"true: {CIFAR10_CLASSES[label]}", fill="black", font=font)
            for row, predicted in enumerate(row_predictions):
                if predicted is not None:
                    colour = tuple(round(255 * c) for c in colours[row, column].tolist())
                    _predicted_label(draw, x, TOP + row * height + tile_height + 2,
                                     CIFAR10_CLASSES[int(predicted[column])], colour, font)
        y = TOP + rows * height + 4
        draw.text((8, y), frames, fill="black", font=font)
        _predicted_label(draw, 8 + round(font.getlength(frames)), y, arrows, (0, 0, 0), font)
        return canvas

    def save_grid(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write `grid_image()` as a PNG, atomically.

        Args:
            path: the PNG file.
            overwrite: replace an existing file (otherwise that is a `FileExistsError`).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        buffer = io.BytesIO()
        self.grid_image().save(buffer, format="PNG")
        return atomic_write(path, buffer.getvalue())


def grid_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at FONT_SIZE px (Pillow 10.1 and newer); its fixed bitmap font before that."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: no sizes
        return ImageFont.load_default()


def _arrow(draw: ImageDraw.ImageDraw, x: int, y: int, colour: tuple[int, ...]) -> None:
    """A small right arrow at (x, y), the height of a line of text (the default font has no "→" glyph)."""
    draw.line([(x, y + 7), (x + 9, y + 7)], fill=colour, width=2)
    draw.polygon([(x + 12, y + 7), (x + 7, y + 3), (x + 7, y + 11)], fill=colour)


def _predicted_label(draw: ImageDraw.ImageDraw, x: int, y: int, name: str, colour: tuple[int, ...],
                     font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """"→ name" under a tile, in its frame's colour."""
    _arrow(draw, x, y, colour)
    draw.text((x + _ARROW_WIDTH, y), name, fill=colour, font=font)


def run_demo(
    data: str | os.PathLike | None = None,
    *,
    purifier: str | os.PathLike | Purifier = DEFAULT_PURIFIER,
    classifier: str | os.PathLike | nn.Module = DEFAULT_CLASSIFIER,
    strength: float | None = None,
    noise_t: tuple[int, int] | None = None,
    eps: float = 8 / 255,
    steps: int = 10,
    limit: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 100,
) -> DemoResult:
    """Classify, attack (PGD on the bare classifier: grey-box), purify and classify again; measure it all.

    Args:
        data: the images (see `load_demo_images`); None for the samples shipped with impure.
        purifier: a `Purifier` (moved to `device`), or a bundled name, folder or Hub id for
            `Purifier.from_pretrained`.
        classifier: an `nn.Module` (images in [0, 1] -> CIFAR-10 logits; moved to `device`) or a name that
            `impure.classifiers.resolve_classifier` accepts, e.g. a bundled one or a .safetensors file.
        strength: purification strength of a purifier loaded by name, relative to its saved noise timesteps
            (see `Purifier.set_strength`; default 1, as saved); for a `Purifier` object set it yourself.
        noise_t: (image, feature) noise timesteps for a purifier loaded by name, instead of a strength (see
            `Purifier.set_noise_t`).
        eps: the PGD budget (L-inf, [0, 1] scale); the step is eps / 4, as in `impure evaluate`.
        steps: PGD iterations.
        limit: use only the first `limit` images.
        seed: seeds the attack's random start and the purifier's noise: equal seeds, equal results.
        device: "auto", "cuda", "mps" or "cpu".
        batch_size: images per batch.
    """
    for name, value, low in (("steps", steps, 1), ("seed", seed, 0), ("batch_size", batch_size, 1)):
        check_integer(name, value, low)
    started = time.perf_counter()
    images, labels, source = load_demo_images(data, limit)  # bad input fails before the models load
    device = select_device(device)
    # The model and the evaluation load here, not when the module does, so that `impure --help` stays light.
    from .defences import load_defence
    from .evaluation import evaluate
    from .hub import Purifier

    if isinstance(purifier, Purifier):
        purifier_name = f"Purifier ({purifier.config.image_size} px, patch {purifier.config.patch_size})"
    else:
        purifier_name = str(purifier)
    purifier = load_defence(purifier, strength=strength, noise_t=noise_t)
    if not isinstance(purifier, Purifier):
        raise ValueError(f"the demo shows an IMPure purifier; {purifier_name} is not one (see `impure evaluate` "
                         "for baselines)")
    model, classifier_name = resolve_classifier(classifier)
    seconds = {"loading": time.perf_counter() - started}
    # Grey-box, as `impure evaluate` measures it: PGD on the bare classifier (made once, shared through the
    # cache), then the same adversarial images through the purifier, x and x_adv purified with equal noise.
    run = partial(evaluate, model, (images, labels), attacks=["pgd"], threat="grey-box", eps=eps, steps=steps,
                  batch_size=batch_size, seed=seed, device=device, progress=False, adversarial_cache={})
    started = time.perf_counter()
    bare = run(None).per_image
    seconds["attacking"] = time.perf_counter() - started
    defended_run = run(purifier, keep_examples=GRID_COLUMNS)
    seconds["purifying"] = time.perf_counter() - started - seconds["attacking"]
    defended, kept = defended_run.per_image, defended_run.examples["grey-box/pgd"]
    predictions = {"clean": bare["clean_prediction"], "attacked": bare["grey-box/pgd/prediction"],
                   "purified_clean": defended["defended_prediction"],
                   "purified_attacked": defended["grey-box/pgd/prediction"]}
    return DemoResult(
        source=source, purifier=purifier_name, classifier=classifier_name, device=str(device), eps=eps,
        alpha=attack_settings("pgd", eps, steps)["alpha"], steps=steps, strength=1.0 if strength is None else strength,
        labels=labels,
        predictions=predictions, seconds=seconds,
        **{f"{name}_correct": predicted == labels for name, predicted in predictions.items()},
        **{key: defended[f"grey-box/pgd/{key}"] for key in ("perturbation_linf", "perturbation_l2",
                                                          "residual_linf", "residual_l2")},
        examples={name: kept[name] for name in ("clean", "adversarial", "purified_clean", "purified")},
        noise_t=purifier.noise_t if purifier.config.mask_mode == "noise" else None,
    )
