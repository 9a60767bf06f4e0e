"""Where the time goes: torch.profiler tables of the bundled purifier's inference and of both training
stages' steps, and the fine-tuning step split into its parts.

    python benchmarks/profile_purifier.py [--threads 2] [--rows 12] [--allocator tuned|default]

- inference: one batch of 64 CIFAR-10 test images, eval mode (noise masks);
- pre-training step, batch 32: purifier forward, pixel L1, backward, AdamW (the `impure train` step);
- fine-tuning step, batch 32, as configs/cifar10-campaign.toml trains: a PGD-5 attack on ResNet-20 made
  on the fly, the purifier's forward, the pixel + ResNet-20 feature (patch-mixed) + cross-entropy loss,
  backward and AdamW; its wall time is split into those parts (medians of a few steps).
Findings are written up in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from impure import Purifier, tune_cpu_allocator
from impure.data import load_npz
from impure.training import load_config
from impure.training.builders import build_attack, build_loss, load_frozen_classifier
from impure.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CAMPAIGN = ROOT / "configs" / "cifar10-campaign.toml"


def table(fn, rows: int) -> str:
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=12, help="operators per table")
    parser.add_argument("--steps", type=int, default=3, help="fine-tuning steps timed for the split")
    parser.add_argument("--allocator", choices=("tuned", "default"), default="tuned")
    args = parser.parse_args()
    if args.allocator == "tuned":
        tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    images, labels = load_npz(SHARED / "data" / "cifar10" / "test_dev.npz")
    purifier = Purifier.from_pretrained("impure/cifar10-s")

    with torch.no_grad():
        print(f"## Inference, batch 64, {args.threads} threads\n")
        print(table(lambda: purifier(images[:64]), args.rows))

    batch, batch_labels = images[:32], labels[:32]
    purifier.train()
    optimizer = build_optimizer(purifier, 1e-4, 0.05)

    def pretrain_step() -> None:
        loss = (purifier(batch, clamp=False) - batch).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(f"## Pre-training step, batch 32, {args.threads} threads\n")
    print(table(pretrain_step, args.rows))

    config = load_config(CAMPAIGN, [f"data.train={SHARED / 'data' / 'cifar10' / 'train_jpeg.npz'}"])
    loss_fn = build_loss(config.loss, purifier.config).train()
    attack = build_attack(config.adversarial.attacks[0], load_frozen_classifier(config.adversarial.classifiers[0]))
    parts: dict[str, list[float]] = {"attack (PGD-5 on ResNet-20)": [], "purifier forward": [],
                                     "loss (features, classifier)": [], "backward": [], "optimizer": []}

    def finetune_step(record: bool = False) -> None:
        marks = [time.perf_counter()]
        adversarial = attack(batch, batch_labels)
        marks.append(time.perf_counter())
        purified = purifier(adversarial, clamp=False)
        marks.append(time.perf_counter())
        total = loss_fn(purified, batch, adversarial, batch_labels)["total"]
        marks.append(time.perf_counter())
        total.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if record:
            for name, start, end in zip(parts, marks, marks[1:], strict=False):
                parts[name].append(end - start)

    print(f"## Fine-tuning step (campaign config), batch 32, {args.threads} threads\n")
    print(table(finetune_step, args.rows))
    for _ in range(args.steps):
        finetune_step(record=True)
    medians = {name: statistics.median(values) for name, values in parts.items()}
    whole = sum(medians.values())
    print(f"Fine-tuning step split (median of {args.steps}): {whole:.2f} s, {32 / whole:.1f} images/s")
    for name, seconds in medians.items():
        print(f"  {name}: {seconds:.3f} s ({100 * seconds / whole:.0f} %)")


if __name__ == "__main__":
    main()
