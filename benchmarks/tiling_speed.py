"""Purifying a photo tile by tile: the default overlap (a tenth of a tile) against half-tile overlaps (the tiling
before 2026-12-07, which purified every pixel 4 times), side by side in interleaved rounds, in images/s and
megapixels/minute, with the number of tiles and purifications per pixel.

    python benchmarks/tiling_speed.py [--purifier impure/cifar10] [--size 502x343] [--threads 2] [--rounds 3]
        [--out benchmarks/results/tiling-speed]

The photo is one of the shared ImageNet samples resized to --size (the size a user reported); the record names the
CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from purifier_speed import cpu_name

from impure import Purifier, tune_cpu_allocator
from impure._util.atomic import atomic_write
from impure.defences.tiling import default_overlap, purify_tiled, tile_positions

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def purify_tiled_before(purifier, images: torch.Tensor, tile: int, batch_size: int, generator) -> torch.Tensor:
    """impure.tiling.purify_tiled as it was until 2026-12-07 (commit 8ceee06), kept here as the baseline: tiles
    overlapping by half a tile, on an image padded by half a tile on every side, blended with sin² windows."""
    count, channels, height, width = images.shape
    half = tile // 2
    rows, cols = math.ceil(height / half) + 1, math.ceil(width / half) + 1
    pad = (half, (cols + 1) * half - width - half, half, (rows + 1) * half - height - half)
    padded = F.pad(images, pad, mode="reflect" if min(height, width) >= tile else "replicate")
    size = padded.shape[-2:]
    tiles = F.unfold(padded, tile, stride=half).transpose(1, 2).reshape(-1, channels, tile, tile)
    ramp = torch.sin(math.pi * (torch.arange(tile, dtype=torch.float64) + 0.5) / tile) ** 2
    window = (ramp[:, None] * ramp[None, :]).float()
    purified = torch.cat([purifier(chunk, generator=generator) * window for chunk in tiles.split(batch_size)])
    blended = F.fold(purified.reshape(count, -1, channels * tile * tile).transpose(1, 2), size, tile, stride=half)
    weights = F.fold(window.reshape(1, tile * tile, 1).expand(1, -1, rows * cols), size, tile, stride=half)
    return (blended / weights)[..., half:half + height, half:half + width]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purifier", default="impure/cifar10")
    parser.add_argument("--size", default="502x343", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write tiling-speed.md and .json here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    photo = np.load(SHARED / "data" / "imagenet" / "samples224_dev.npz")["images"][0]
    photo = np.array(Image.fromarray(photo).resize((width, height), Image.BICUBIC))  # writable, for torch
    images = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    purifier = Purifier.from_pretrained(args.purifier)
    tile = purifier.config.image_size
    half = tile // 2
    runs = {"half-tile overlap (before)": lambda: purify_tiled_before(purifier, images, tile, 64,
                                                                      torch.Generator().manual_seed(0)),
            f"overlap {default_overlap(tile)} px (now)": lambda: purify_tiled(
                purifier, images, tile, 64, torch.Generator().manual_seed(0), False)}
    counts = {"half-tile overlap (before)": (math.ceil(height / half) + 1) * (math.ceil(width / half) + 1),
              f"overlap {default_overlap(tile)} px (now)": len(tile_positions(height, tile, default_overlap(tile)))
              * len(tile_positions(width, tile, default_overlap(tile)))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    rows = []
    for name in runs:
        tiles = counts[name]
        seconds = statistics.median(times[name])
        rows.append({"scheme": name, "tiles": tiles,
                     "purifications_per_pixel": tiles * tile * tile / (width * height), "seconds": seconds,
                     "images_per_s": 1 / seconds, "megapixels_per_minute": width * height / 1e6 * 60 / seconds})
    cpu = cpu_name()
    lines = [f"A {width} x {height} photo purified by {args.purifier} in {tile}-px tiles (batches of 64), "
             f"{args.threads} thread(s), median of {args.rounds} interleaved rounds, on {cpu}:", "",
             "| tiling | tiles | purifications per pixel | s per photo | images / s | megapixels / minute |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scheme']} | {r['tiles']} | {r['purifications_per_pixel']:.2f} | {r['seconds']:.1f} | "
              f"{r['images_per_s']:.3f} | {r['megapixels_per_minute']:.2f} |" for r in rows]
    lines += ["", f"Speed-up: {rows[0]['seconds'] / rows[1]['seconds']:.2f}x."]
    print("\n".join(lines))
    if args.out:
        atomic_write(args.out / "tiling-speed.md", "\n".join(lines) + "\n")
        atomic_write(args.out / "tiling-speed.json", json.dumps({"argv": sys.argv[1:], "cpu": cpu, "rows": rows},
                                                                 indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
