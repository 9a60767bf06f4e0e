"""Export a trained purifier as bundled weights: float16 safetensors + config.json, checked against float32.

    python recipes/export_purifier.py runs/cifar10-s-cpu-finetune/model --out src/impure/weights/cifar10-s \
        [--strength 0.5] [--force]
    python recipes/export_purifier.py runs/cifar10-campaign/checkpoint.pt --out src/impure/weights/cifar10 ...

A training checkpoint (`checkpoint.pt`) exports its EMA weights when the run kept an EMA.

`--strength` bakes an evaluation strength into the exported config (its noise timesteps become the new
nominal ones, so `set_strength(1)` means this strength). The script purifies the first 200 images of
../shared/data/cifar10/test_dev.npz with the float32 and the float16 weights under the same noise and prints
the PSNR between the two outputs; it refuses to export below --min-psnr (default 40 dB). It also writes
`card.json`: the settings and, for the first 100 test_dev images purified with seed 0, the PSNR and the
accuracy of the shared ResNet-56 through the exported purifier (tests/test_bundled_weights.py checks them).

`--noise-t IMAGE,FEATURE` gives the strength as the evaluation timesteps themselves, whatever the source's
nominal ones (they must be one strength of both). `--train-noise-t IMAGE_LO,IMAGE_HI,FEATURE_LO,FEATURE_HI`
replaces the training noise ranges in the exported config, for a fine-tune that should concentrate on the
exported strength (e.g. the robust recipe's init).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from impure import Purifier
from impure._util.atomic import atomic_write
from impure.classifiers import load_classifier
from impure.data import load_npz
from impure.metrics import psnr
from impure.training.checkpoint import purifier_from_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def purify(purifier: Purifier, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.cat([purifier(batch, generator=generator) for batch in images.split(100)])


def measure(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """PSNR and ResNet-56 accuracy through the purifier saved in `folder` (seed 0), for the model card."""
    purified = purify(Purifier.from_pretrained(folder).eval(), images)
    classifier = load_classifier("cifar_resnet56", SHARED / "models" / "cifar10_resnet56.safetensors").eval()
    with torch.no_grad():
        accuracy = (classifier(purified).argmax(1) == labels).float().mean().item()
    return {"test_dev_first100_psnr_db": round(psnr(purified, images).mean().item(), 3),
            "test_dev_first100_resnet56_accuracy": accuracy}


def load_source(model: str | Path) -> Purifier:
    """The purifier in a model id, a save_pretrained folder or a checkpoint.pt (its EMA weights), in eval mode."""
    if str(model).endswith(".pt"):
        return purifier_from_checkpoint(model)
    return Purifier.from_pretrained(model).eval()


def source_agreement(model: str | Path) -> float:
    """The float16-vs-float32 agreement recorded when `model`, already float16, was exported from float32."""
    card = Path(model) / "card.json"
    if not card.is_file():
        raise SystemExit(f"{model} holds float16 weights without the card.json of their export: export from "
                         "the float32 checkpoint instead")
    return float(json.loads(card.read_text())["float16_vs_float32_psnr_db"])


def float16_agreement(purifier: Purifier, images: torch.Tensor, source: str | Path) -> float:
    """PSNR (dB) of the float16 weights' outputs against the float32 ones on `images`; casts `purifier` to
    float16. Weights that are float16 already (a re-export) keep the agreement their own export recorded."""
    if all(torch.equal(weight, weight.half().float()) for weight in purifier.parameters()):
        purifier.half()
        return source_agreement(source)
    reference = purify(purifier, images)
    with tempfile.TemporaryDirectory() as staging:
        purifier.half().save_pretrained(staging)
        exported = Purifier.from_pretrained(staging).eval()
        return psnr(purify(exported, images), reference).mean().item()


def holds_weights(out: Path, force: bool) -> bool:
    """True (with a message) when `out` already holds weights that --force was not given to replace."""
    if (out / "model.safetensors").exists() and not force:
        print(f"{out} already holds weights; pass --force to replace them", file=sys.stderr)
        return True
    return False


def _ints(count: int, form: str):
    def parse(text: str) -> tuple[int, ...]:
        values = tuple(int(v) for v in text.split(","))
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
        return values

    return parse


def _strength_for(purifier: Purifier, image_t: int, feature_t: int) -> float:
    """The strength of `purifier` whose evaluation timesteps are (image_t, feature_t)."""
    nominal = purifier.config.image_noise_t, purifier.config.feature_noise_t
    strength = image_t / nominal[0]
    if round(nominal[1] * strength) != feature_t:
        raise SystemExit(f"--noise-t {image_t},{feature_t} is not one strength of the nominal timesteps "
                         f"{nominal[0]},{nominal[1]}")
    return strength


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a save_pretrained folder (a training run's model/) or a checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="folder to write config.json and model.safetensors")
    strength = parser.add_mutually_exclusive_group()
    strength.add_argument("--strength", type=float, default=1.0, help="evaluation strength to make nominal")
    strength.add_argument("--noise-t", type=_ints(2, "IMAGE,FEATURE"), default=None,
                        help="IMAGE,FEATURE: evaluation timesteps to make nominal, instead of --strength")
    parser.add_argument("--train-noise-t", type=_ints(4, "IMAGE_LO,IMAGE_HI,FEATURE_LO,FEATURE_HI"), default=None,
                        help="IMAGE_LO,IMAGE_HI,FEATURE_LO,FEATURE_HI: new training noise ranges")
    parser.add_argument("--min-psnr", type=float, default=40.0, help="float16 vs float32 output agreement")
    parser.add_argument("--force", action="store_true", help="replace existing weights in --out")
    args = parser.parse_args(argv)
    if holds_weights(args.out, args.force):
        return 1

    purifier = load_source(args.model)
    if args.noise_t is not None:
        args.strength = _strength_for(purifier, *args.noise_t)
    purifier.set_strength(args.strength)
    if args.train_noise_t is not None:
        image_lo, image_hi, feature_lo, feature_hi = args.train_noise_t
        purifier.set_training_noise((image_lo, image_hi), (feature_lo, feature_hi))
    images, labels = load_npz(SHARED / "data" / "cifar10" / "test_dev.npz")
    agreement = float16_agreement(purifier, images[:200], args.model)
    print(f"float16 weights vs float32: outputs agree to {agreement:.1f} dB PSNR (200 test_dev images)")
    if agreement < args.min_psnr:
        print(f"below --min-psnr {args.min_psnr}: not exported", file=sys.stderr)
        return 1
    purifier.save_pretrained(args.out)  # float16
    card = {"source": str(args.model), "strength_made_nominal": args.strength, "weights": "float16",
            **({"train_noise_t": list(args.train_noise_t)} if args.train_noise_t else {}),
            "float16_vs_float32_psnr_db": round(agreement, 1), **measure(args.out, images[:100], labels[:100])}
    atomic_write(args.out / "card.json", json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))
    size = (args.out / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.2f} MB, image/feature noise t = "
          f"{purifier.config.image_noise_t}/{purifier.config.feature_noise_t})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
