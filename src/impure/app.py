"""The web demo behind `impure app` (the `app` extra: Gradio): pick or upload an image, attack the classifier,
see the clean, adversarial and purified images side by side with their top-3 predictions; offline on a CPU."""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

from .attacks import FGSM, PGD, attack_settings
from .classifiers import bundled_classifier_card, resolve_classifier
from .defences import load_defence
from .demo import CIFAR10_CLASSES, DEFAULT_CLASSIFIER, DEFAULT_PURIFIER, load_demo_images, witness_note
from .hub import Purifier
from .hub_files import bundled_names

__all__ = ["ATTACKS", "attack_and_purify", "build_app", "measured_rate", "sample_names", "saved_example",
           "worked_example"]

ATTACKS = ("PGD", "FGSM")
_DISPLAY = 224  # images are shown upscaled (nearest) to this side
_LOCK = threading.Lock()  # one request at a time: the cached purifiers' strength is set per request
# Short: at 1000 px the image boxes leave about 100 px for a label beside their buttons.
_IMAGE_LABELS = {"clean": "clean", "adversarial": "adversarial", "purified": "purified", "residual": "residual"}
_TOP3_LABELS = {"clean_top3": "clean: top-3", "adversarial_top3": "adversarial: top-3",
                "purified_top3": "purified adversarial: top-3"}
_OUTPUTS = (*_IMAGE_LABELS, *_TOP3_LABELS)  # the page's outputs, in the order `run` returns them
# The settings the page opens with (its worked example is computed with them).
_PAGE_SETTINGS = {"attack": "PGD", "eps_255": 8, "steps": 10, "strength": 1.0, "seed": 0}
MAX_UPLOAD_PIXELS = 40_000_000  # larger uploads are refused with a message before they are decoded


@functools.lru_cache(maxsize=1)
def _samples() -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped sample images and labels, read once."""
    images, labels, _ = load_demo_images()
    return images, labels


def sample_names() -> list[str]:
    """Names of the shipped sample images, e.g. "1: airplane", in their order."""
    labels = _samples()[1]
    return [f"{index + 1}: {CIFAR10_CLASSES[int(label)]}" for index, label in enumerate(labels)]


@functools.lru_cache(maxsize=4)
def _purifier(name: str) -> Purifier:
    purifier = load_defence(name)
    if not isinstance(purifier, Purifier):
        raise ValueError(f"the app shows an IMPure purifier; {name} is not one")
    return purifier


@functools.lru_cache(maxsize=4)
def _classifier(name: str) -> nn.Module:
    return resolve_classifier(name)[0].eval()


def attack_and_purify(image: np.ndarray | str | None, sample: str | None, purifier: str = DEFAULT_PURIFIER,
                      classifier: str = DEFAULT_CLASSIFIER, attack: str = "PGD", eps_255: float = 8.0,
                      steps: int = 10, strength: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Attack `classifier` on one image (grey-box: the attack sees the classifier only), purify the clean and
    the adversarial image with the same noise, and classify all of them.

    Args:
        image: an uploaded RGB image (H, W, 3) uint8 or the path of an image file, resized to the purifier's size;
            or None to use `sample`.
        sample: a name from `sample_names()`.
        purifier: the purifier's name or folder (the bundled one by default).
        classifier: the classifier's name or path (the bundled one by default).
        attack: "PGD" (random start, step ε/4) or "FGSM".
        eps_255: the ℓ∞ budget in 1/255 steps.
        steps: PGD iterations.
        strength: the purification strength (`Purifier.set_strength`).
        seed: seeds the attack's start and the purifier's noise.

    Returns:
        {"clean", "adversarial", "purified", "purified_clean", "residual"}: images (H, W, 3) uint8 (the
        residual P(x_adv) - P(x) amplified so that ±ε is full contrast), and {"clean_top3",
        "adversarial_top3", "purified_top3"}: class -> probability for the three most likely classes.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    with _LOCK:
        return _attack_and_purify(image, sample, purifier, classifier, attack, eps_255, steps, strength, seed)


def _attack_and_purify(image, sample, purifier, classifier, attack, eps_255, steps, strength, seed) -> dict[str, Any]:
    model = _purifier(purifier)
    model.set_strength(strength)
    net = _classifier(classifier)
    size = model.config.image_size
    x = _input_image(image, sample, size)
    eps = float(eps_255) / 255
    with torch.no_grad():
        label = net(x).argmax(dim=1)  # the attack moves away from the clean prediction
    generator = torch.Generator().manual_seed(int(seed))
    if attack == "PGD":
        adversary = PGD(net, **attack_settings("pgd", eps, int(steps)), generator=generator)
    else:
        adversary = FGSM(net, eps=eps)
    adversarial = adversary(x, label) if eps > 0 else x
    with torch.no_grad():
        purified_clean = model(x, generator=torch.Generator().manual_seed(int(seed)))
        purified = model(adversarial, generator=torch.Generator().manual_seed(int(seed)))
        probabilities = {name: net(batch).softmax(dim=1)[0] for name, batch in
                         (("clean", x), ("adversarial", adversarial), ("purified", purified))}
    residual = (0.5 + (purified - purified_clean) / (2 * max(eps, 1 / 255))).clamp(0, 1)
    images = {"clean": x, "adversarial": adversarial, "purified": purified, "purified_clean": purified_clean,
              "residual": residual}
    return {**{name: _display(batch) for name, batch in images.items()},
            **{f"{name}_top3": _top3(p) for name, p in probabilities.items()}}


def read_upload(path: str | os.PathLike) -> np.ndarray:
    """An uploaded image file as an (H, W, 3) uint8 RGB array, or a `ValueError` that says what is wrong with it:
    not an image, too large, or in a mode that has no RGB form."""
    from PIL import Image, UnidentifiedImageError

    name = os.path.basename(str(path))
    try:
        with Image.open(path) as picture:
            width, height = picture.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise ValueError(f"{name} is {width} x {height} pixels, larger than the {MAX_UPLOAD_PIXELS // 10**6} "
                                 "megapixels this page takes; resize it first (the purifier works at 32 x 32)")
            try:
                return np.asarray(picture.convert("RGB"))
            except (ValueError, OSError) as error:
                raise ValueError(f"{name} is a {picture.mode!r} image, which has no RGB form here ({error}); save "
                                 "it as an RGB or greyscale PNG or JPEG") from error
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name} is not an image this page can read (PNG, JPEG, BMP, WebP, ...): {error}") from error


def _input_image(image: np.ndarray | str | None, sample: str | None, size: int) -> torch.Tensor:
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        image = read_upload(image)
    if image is not None:
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB image, got an array of shape {array.shape}")
        picture = Image.fromarray(array[..., :3].astype(np.uint8)).resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)[None].float() / 255
    names = sample_names()
    if sample not in names:
        raise ValueError(f"choose a sample image ({names[0]}, ...) or upload one")
    images = _samples()[0]
    x = images[names.index(sample)][None]
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return x


def _display(batch: torch.Tensor) -> np.ndarray:
    image = (batch[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    scale = max(1, _DISPLAY // image.shape[0])
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _top3(probabilities: torch.Tensor) -> dict[str, float]:
    names = CIFAR10_CLASSES if probabilities.numel() == len(CIFAR10_CLASSES) else \
        [str(i) for i in range(probabilities.numel())]
    values, indices = probabilities.topk(3)
    return {names[int(i)]: float(v) for v, i in zip(values, indices, strict=True)}


@functools.lru_cache(maxsize=8)
def worked_example(purifier: str = DEFAULT_PURIFIER, classifier: str = DEFAULT_CLASSIFIER
                   ) -> tuple[str, dict[str, Any]]:
    """(name, `attack_and_purify` outputs) of the first shipped sample that the defence saves with the page's
    settings: classified correctly, fooled by the attack, and correct again after purification; else the first
    sample's. Computed once per purifier and classifier."""
    _, labels = _samples()
    first = None
    for name, label in zip(sample_names(), labels.tolist(), strict=True):
        out = attack_and_purify(None, name, purifier, classifier, **_PAGE_SETTINGS)
        first = first or (name, out)
        top = {key: max(out[f"{key}_top3"], key=out[f"{key}_top3"].get) for key in ("clean", "adversarial", "purified")}
        truth = CIFAR10_CLASSES[label]
        if top["clean"] == truth and top["adversarial"] != truth and top["purified"] == truth:
            return name, out
    return first


def saved_example(purifier: str = DEFAULT_PURIFIER, classifier: str = DEFAULT_CLASSIFIER) -> str:
    """The name of the page's worked example (`worked_example`)."""
    return worked_example(purifier, classifier)[0]


def measured_rate(purifier: str = DEFAULT_PURIFIER, classifier: str = DEFAULT_CLASSIFIER) -> str | None:
    """One plain line with the measured rate behind the worked example, from the bundled classifier's card (the
    same purifier and attack over its test images), so that one saved image does not oversell; else None."""
    try:
        measured = bundled_classifier_card(classifier).get("through_purifier")
    except (ValueError, KeyError, OSError):  # not a bundled classifier: no card to quote
        return None
    if not measured or measured.get("purifier") != purifier:
        return None
    rate = measured["accuracy"][classifier]["purified_adversarial"]
    return (f"Measured on CIFAR-10 {measured['images']} with this attack: {rate:.1f} % stay correct after "
            f"purification; the example is one of them, {100 - rate:.1f} % are not saved.")


def build_app(purifiers: list[str] | None = None, classifiers: list[str] | None = None):
    """The Gradio Blocks app; `.launch()` serves it. Needs the extra: `pip install "impure[app]"`.

    The page opens on a worked example: the first sample the defence saves (`saved_example`), attacked with the
    default settings and purified, computed here, so the images and predictions are there before anything is
    clicked; beside it, the measured rate over the test images (`measured_rate`) keeps it from overselling.
    """
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('the web demo needs Gradio: pip install "impure[app]"') from error
    purifiers = purifiers or [name for name in bundled_names() if "resnet" not in name]
    classifiers = classifiers or [DEFAULT_CLASSIFIER]
    samples = sample_names()
    sample, example = worked_example(purifiers[0], classifiers[0])
    defaults = dict(sample=sample, purifier=purifiers[0], classifier=classifiers[0], **_PAGE_SETTINGS)
    rate = measured_rate(purifiers[0], classifiers[0])
    nominal = _purifier(defaults["purifier"]).nominal_noise_t

    def run(image, sample, purifier, classifier, attack, eps_255, steps, strength, seed):
        try:
            out = attack_and_purify(image, sample, purifier, classifier, attack, eps_255, steps, strength, seed)
        except (ValueError, OSError) as error:  # a user's mistake: a message in the page, not a traceback
            raise gr.Error(str(error)) from error
        return tuple(out[name] for name in _OUTPUTS)

    with gr.Blocks(title="impure: adversarial purification") as app:
        gr.Markdown("# impure: attack a classifier, then purify its input\n"
                    "Pick a CIFAR-10 sample or upload an image, choose the attack and its budget, and compare "
                    "the classifier's top-3 predictions on the clean, adversarial and purified images. The "
                    "attack sees the classifier only (grey-box); everything runs offline on this machine. "
                    f"Shown below: sample {defaults['sample']}, already attacked and purified (\"purified\" is the "
                    "purified adversarial image); the residual P(x_adv) − P(x) is amplified so that ±ε is full "
                    "contrast."
                    + (f" {witness}." if (witness := witness_note(classifiers[0])) else ""))
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Dropdown(samples, value=defaults["sample"], label="sample image")
                # A file, not gr.Image: Gradio would decode an image upload itself and answer a bad file with
                # its generic error; here `read_upload` says what is wrong.
                upload = gr.File(label="or upload an image (used instead of the sample)", type="filepath",
                                 height=140)
                attack = gr.Radio(list(ATTACKS), value=defaults["attack"], label="attack")
                eps = gr.Slider(0, 16, value=defaults["eps_255"], step=1, label="ε (in 1/255)")
                button = gr.Button("Attack and purify", variant="primary")
                with gr.Accordion("more settings", open=False):
                    purifier = gr.Dropdown(purifiers, value=defaults["purifier"], label="purifier",
                                           allow_custom_value=True)
                    classifier = gr.Dropdown(classifiers, value=defaults["classifier"], label="classifier",
                                             allow_custom_value=True)
                    steps = gr.Slider(1, 40, value=defaults["steps"], step=1, label="PGD steps")
                    strength = gr.Slider(0.25, 4, value=defaults["strength"], step=0.25,
                                         label=f"purification strength (× the purifier's saved noise timesteps, "
                                               f"t {nominal[0]}/{nominal[1]} for {defaults['purifier']})")
                    seed = gr.Number(value=defaults["seed"], precision=0, label="seed")
            with gr.Column(scale=3):
                if rate:  # beside the example, so that one saved image does not oversell
                    gr.Markdown(rate, elem_id="measured-rate")
                with gr.Row():
                    images = [gr.Image(value=example[name], label=label, height=224, format="png")
                              for name, label in _IMAGE_LABELS.items()]
                with gr.Row():
                    tops = [gr.Label(value=example[name], num_top_classes=3, label=label)
                            for name, label in _TOP3_LABELS.items()]
        button.click(run, [upload, sample, purifier, classifier, attack, eps, steps, strength, seed],
                     [*images, *tops], api_name="purify")
    return app


def serve(host: str = "127.0.0.1", port: int = 7860, *, block: bool = True, **launch: Any):
    """Build the app and serve it on `host:port` (no share link, no analytics, and none of Gradio's own
    console messages unless `quiet=False` is passed)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app()
    launch.setdefault("quiet", True)
    app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, **launch)
    return app
