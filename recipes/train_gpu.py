"""Train the CIFAR-10 purifier on one GPU within a wall-clock budget: the campaign's recipe
(configs/cifar10-campaign.toml) with bf16 autocast, a large batch and the training set decoded once
and held in GPU memory.

    python recipes/train_gpu.py --out runs/gpu [--minutes 8] [--batch-size 512] [--steps 2000]

It continues from the config's model.init (the bundled purifier), warms up, holds the learning rate,
and cools down over the last fifth of --steps; --minutes stops it earlier (checkpointed, resumable with
--resume). It writes the Trainer's run folder (log.jsonl, checkpoint.pt, train_config.json) and the EMA
weights as a save_pretrained folder in OUT/model. On a machine without ../shared, copy the CIFAR-10
training file into the checkout (a git-ignored folder) and pass --train. `--set key=value` overrides
any config setting (e.g. for the CPU smoke test in tests/test_recipes.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def decode_once(path: Path, limit: int, device: torch.device):
    """The whole training file decoded to uint8 in one pass and moved to `device`."""
    from impure.data import ImageTensorDataset, open_dataset

    dataset = open_dataset(path)
    count = len(dataset) if not limit else min(limit, len(dataset))
    chunks, labels = [], []
    for start in range(0, count, 5000):
        images, batch_labels = dataset.get_batch(list(range(start, min(start + 5000, count))))
        chunks.append(images.mul(255).round().to(torch.uint8))
        labels.append(batch_labels)
    return ImageTensorDataset(torch.cat(chunks).to(device), torch.cat(labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cifar10-campaign.toml")
    parser.add_argument("--out", type=Path, required=True, help="the run folder")
    parser.add_argument("--train", type=Path, default=SHARED / "data" / "cifar10" / "train_jpeg.npz")
    parser.add_argument("--train-limit", type=int, default=0, help="use the first N training images (0: all)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the training loop")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from impure.device import select_device
    from impure.training import Trainer, load_config
    from impure.training.checkpoint import purifier_from_checkpoint

    device = select_device(args.device)
    start = time.perf_counter()
    dataset = decode_once(args.train, args.train_limit, device)
    decoded = time.perf_counter() - start
    cooldown = args.steps // 5
    overrides = [f"output_dir={args.out}", f"device={device}", f"data.train={args.train}",
                 f"optim.steps={args.steps}", f"optim.batch_size={args.batch_size}", f"optim.lr={args.lr}",
                 f"optim.warmup_steps={max(1, args.steps // 40)}", f"optim.cooldown_steps={cooldown}",
                 "data.num_workers=0", "log.progress=false", *args.overrides]
    config = load_config(args.config, overrides)
    result = Trainer(config, train_data=dataset).fit(resume=args.resume, time_limit=args.minutes * 60)
    purifier = purifier_from_checkpoint(args.out / "checkpoint.pt")
    purifier.save_pretrained(args.out / "model")
    summary = {"step": result["step"], "finished": result["finished"], "decode_seconds": round(decoded, 1),
               "seconds": round(time.perf_counter() - start, 1), "device": str(device),
               "last": result["metrics"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
