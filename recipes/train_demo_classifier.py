"""Train the small CIFAR-10 classifier bundled for `impure demo` (a ResNet-20) on the CPU, resumably.

    python recipes/train_demo_classifier.py --out runs/demo-classifier [--epochs 15] [--threads 2]
        [--data jpeg|lossless5k|jpeg5k|mixed] [--init WEIGHTS] [--weight-decay 5e-4] [--teacher cifar_resnet56]
        [--high-frequencies] [--bf16]

By default it trains on the 50,000 JPEG training images of ../shared/data/cifar10/train_jpeg.npz (random crops
and flips). `--data lossless5k` takes the 5,085 lossless training images of train_lossless_5k.npz instead, and
`--data jpeg5k` the JPEG copies of the same 5,085 images (so the two differ only by JPEG's loss), and `--data
mixed` all 50,000 with those 5,085 replaced by their lossless originals; `--teacher` distils a shared ResNet
(../shared/models) into it (the loss adds the KL divergence to the teacher's softened predictions, temperature
4); `--high-frequencies` gives every training image back some of the high frequencies that JPEG removed (a
random unsharp mask and a little Gaussian noise, see `restore_high_frequencies`), and the teacher, if any, is
asked about the same altered image, so that the student learns the teacher's response above JPEG's pass band;
`--bf16` runs the forward passes under bfloat16 autocast (about 1.8 times faster on CPUs with AMX or AVX-512
BF16); `--init` starts from saved weights (a fine-tune). It checkpoints after every epoch (atomically; rerun
the same command to resume), and writes the final weights as float16 safetensors to OUT/model.safetensors, with
the accuracy on test_dev.npz in OUT/card.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from impure.classifiers import cifar_resnet20, load_classifier
from impure.data import CIFAR10JPEG, load_npz
from impure.hub_files import save_file_atomic

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


DATA_CHOICES = ("jpeg", "lossless5k", "jpeg5k", "mixed")


def training_images(data: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images (N, 3, 32, 32) in [0, 1] and labels that `--data` names."""
    folder = SHARED / "data" / "cifar10"
    if data == "lossless5k":
        return load_npz(folder / "train_lossless_5k.npz")
    train = CIFAR10JPEG(folder / "train_jpeg.npz")
    images, labels = train.get_batch(torch.arange(len(train)))  # decoded once (~600 MB float)
    if data == "jpeg":
        return images, labels
    lossless, lossless_labels = load_npz(folder / "train_lossless_5k.npz")
    copies = jpeg_copies(lossless, lossless_labels, images, labels)
    if data == "jpeg5k":
        return images[copies], lossless_labels
    images[copies] = lossless
    return images, labels


def jpeg_copies(lossless: torch.Tensor, lossless_labels: torch.Tensor, jpeg: torch.Tensor,
                jpeg_labels: torch.Tensor) -> torch.Tensor:
    """Index into `jpeg` of each lossless image's JPEG copy: the nearest image of the same class (the JPEG
    file is ordered by class, not as the official batches, so `train_index` does not address it)."""
    copies = torch.empty(len(lossless_labels), dtype=torch.long)
    for label in lossless_labels.unique():
        mine, theirs = (lossless_labels == label).nonzero()[:, 0], (jpeg_labels == label).nonzero()[:, 0]
        distances = torch.cdist(lossless[mine].flatten(1), jpeg[theirs].flatten(1))
        copies[mine] = theirs[distances.argmin(1)]
    error = (jpeg[copies] - lossless).abs().flatten(1).mean(1) * 255
    if copies.unique().numel() != len(copies) or error.max() > 20:
        raise RuntimeError(f"could not pair the lossless images with their JPEG copies (mean error up to "
                           f"{error.max():.1f}/255)")
    print(f"paired {len(copies)} lossless images with their JPEG copies: mean absolute difference "
          f"{error.mean():.1f}/255 (largest {error.max():.1f})")
    return copies


def distillation_loss(logits: torch.Tensor, teacher: torch.nn.Module, images: torch.Tensor,
                      temperature: float = 4.0) -> torch.Tensor:
    """KL(teacher || student) of the predictions softened by `temperature`, scaled by its square (Hinton et al.)."""
    with torch.no_grad():
        target = F.log_softmax(teacher(images).float() / temperature, dim=1)
    student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * temperature**2


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crops (zero padding) and horizontal flips, vectorised over the batch."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None].expand(-1, 3, -1, width + 2 * padding)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :].expand(-1, 3, height, -1)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(count, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def restore_high_frequencies(images: torch.Tensor, generator: torch.Generator, max_sharpen: float = 1.5,
                              max_noise: float = 0.03) -> torch.Tensor:
    """Sharpen each image by a random amount in [0, max_sharpen] (unsharp mask against a 3x3 box blur) and add
    Gaussian noise of a random standard deviation in [0, max_noise]: high-frequency content that JPEG q75
    training images lack. Vectorised over the batch; the result is clamped to [0, 1]."""
    count = len(images)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = torch.rand(count, 1, 1, 1, generator=generator) * max_sharpen
    sigma = torch.rand(count, 1, 1, 1, generator=generator) * max_noise
    noise = torch.randn(images.shape, generator=generator)
    return (images + amount * (images - blurred) + sigma * noise).clamp(0, 1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(250)])
    return float((predictions == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo-classifier"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=DATA_CHOICES, default="jpeg", help="training images (default jpeg)")
    parser.add_argument("--init", type=Path, help="start from these cifar_resnet20 weights (a fine-tune)")
    parser.add_argument("--teacher", choices=("cifar_resnet20", "cifar_resnet56"),
                        help="distil this shared ResNet (its weights in ../shared/models) into the classifier")
    parser.add_argument("--high-frequencies", action="store_true",
                        help="sharpen and add noise to each training image (restore_high_frequencies)")
    parser.add_argument("--bf16", action="store_true", help="forward passes under bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    train_images, train_labels = training_images(args.data)
    test_images, test_labels = load_npz(SHARED / "data" / "cifar10" / "test_dev.npz")

    torch.manual_seed(args.seed)
    model = cifar_resnet20(args.init).float() if args.init else cifar_resnet20()
    teacher = None
    if args.teacher:  # the shared weights are named cifar10_resnet20/56.safetensors
        weights = SHARED / "models" / f"{args.teacher.replace('cifar_', 'cifar10_')}.safetensors"
        teacher = load_classifier(args.teacher, weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    steps_per_epoch = len(train_labels) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                   steps_per_epoch=steps_per_epoch, pct_start=0.2)
    generator = torch.Generator().manual_seed(args.seed)
    start_epoch, checkpoint = 0, args.out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        start_epoch = state["epoch"]
        print(f"resuming after epoch {start_epoch}")

    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = torch.randperm(len(train_labels), generator=generator)
        started, seen = time.perf_counter(), 0
        bar = tqdm(order[: steps_per_epoch * args.batch_size].split(args.batch_size), desc=f"epoch {epoch + 1}")
        for batch in bar:
            images = augment(train_images[batch], generator)
            if args.high_frequencies:
                images = restore_high_frequencies(images, generator)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(images)
                loss = F.cross_entropy(logits.float(), train_labels[batch])
                if teacher is not None:
                    loss = loss + distillation_loss(logits.float(), teacher, images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
        test_accuracy = accuracy(model, test_images, test_labels)
        print(f"epoch {epoch + 1}: test_dev accuracy {test_accuracy:.3f}")
        temporary = checkpoint.with_suffix(".tmp")
        torch.save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                        generator=generator.get_state(), epoch=epoch + 1), temporary)
        os.replace(temporary, checkpoint)

    model.eval()
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_file_atomic(weights, args.out / "model.safetensors")
    check = cifar_resnet20(args.out / "model.safetensors")
    card = dict(architecture="cifar_resnet20", data=args.data, init=str(args.init) if args.init else None,
                teacher=args.teacher, high_frequencies=args.high_frequencies, bf16=args.bf16,
                epochs=args.epochs, weight_decay=args.weight_decay, batch_size=args.batch_size, lr=args.lr,
                seed=args.seed, test_dev_accuracy_fp32=accuracy(model, test_images, test_labels),
                test_dev_accuracy_fp16_weights=accuracy(check, test_images, test_labels))
    (args.out / "card.json").write_text(json.dumps(card, indent=1))
    print(json.dumps(card))


if __name__ == "__main__":
    main()
