"""Purification speed and peak memory of the purifier presets, and the speed-up over a pass structured
like the reference implementation (../shared/reference/SPEC.md), measured side by side.

    python benchmarks/purifier_speed.py [--threads 2] [--device auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

from impure import Purifier, PurifierConfig, select_device
from impure.model.masking import lattice_group_ids, lattice_partition, window_rows

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The reference implementation on this config and input, 2 CPU threads (issue 2; its code is not ours to run).
REFERENCE_SECONDS = 3.7
# Batch sizes per preset: the paper's ViT-B/16 is slow on a CPU.
BATCHES = {"reference-small": (1, 16, 64, 256), "cifar10-s": (1, 16, 64, 256), "paper-vitb16": (1, 8)}


def timm_blocks(blocks: torch.nn.ModuleList, heads: int, eps: float) -> torch.nn.ModuleList:
    """The same weights in timm's ViT blocks (the reference's building block; its key names match ours)."""
    from timm.models.vision_transformer import Block

    copies = torch.nn.ModuleList()
    for block in blocks:
        width = block.norm1.normalized_shape[0]
        copy = Block(width, heads, mlp_ratio=block.mlp.fc1.out_features / width, qkv_bias=True,
                     norm_layer=partial(torch.nn.LayerNorm, eps=eps))
        copy.load_state_dict(block.state_dict())
        copies.append(copy.eval())
    return copies


@torch.no_grad()
def reference_structured(purifier: Purifier, images: torch.Tensor, image_noise: torch.Tensor,
                         feature_noise: torch.Tensor, encoder_blocks: torch.nn.ModuleList,
                         decoder_blocks: torch.nn.ModuleList) -> torch.Tensor:
    """The eval forward (noise mode) as SPEC.md lays it out, with timm blocks: two separate encoder passes,
    the K decoder copies built one by one, every decoder token through every block, then the merge."""
    cfg, m = purifier.config, purifier
    batch, groups, p = images.shape[0], cfg.num_groups, cfg.patch_size
    rows = images.shape[-1] // p
    length, per_group = rows * rows, rows * rows // groups
    offset = (cfg.grid_size - rows + 1) // 2
    table_rows = window_rows(rows, rows, cfg.grid_size, torch.tensor([[offset, offset]]))[0]
    shuffle = lattice_partition(rows, rows, groups)
    restore = shuffle.argsort()
    group_of = lattice_group_ids(rows, rows, groups)
    normalized = (images - m.mean) / m.std

    def encode(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = m.patch_embed(image).flatten(2).transpose(1, 2) + m.pos_table[table_rows]
        x = tokens[:, shuffle].reshape(batch * groups, per_group, -1)
        x = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        taps = []
        for index, block in enumerate(encoder_blocks):
            x = block(x)
            if index in cfg.fusion_taps:
                taps.append(m.fusion_proj[cfg.fusion_taps.index(index)](x))
        taps.append(x)
        weights = m.fusion_logits.softmax(0).view(-1, 1, 1, 1)
        x = m.encoder_norm((torch.stack(taps) * weights).sum(0))
        return x[:, 0].reshape(batch, groups, -1), x[:, 1:].reshape(batch, length, -1)[:, restore]

    cls, clean = encode(normalized)
    signal, scale = m.noise_signal, m.noise_scale
    noisy_image = signal[cfg.image_noise_t] * normalized + scale[cfg.image_noise_t] * image_noise
    _, noisy = encode(noisy_image)
    visible = m.decoder_embed_norm(m.decoder_embed(clean))
    masked = m.decoder_embed_norm(m.decoder_embed(noisy))
    hidden = signal[cfg.feature_noise_t] * masked + scale[cfg.feature_noise_t] * feature_noise
    copies = []
    for c in range(groups):
        head = m.decoder_cls_embed(torch.cat([cls[:, g] for g in range(groups) if g != c], dim=1))
        tokens = torch.where((group_of == c)[None, :, None], hidden, visible) + m.decoder_pos_table[table_rows]
        copies.append(torch.cat([head[:, None], tokens], dim=1))
    x = torch.cat(copies)
    for block in decoder_blocks:
        x = block(x)
    x = m.decoder_norm(x[:, 1:]).view(groups, batch, length, -1)
    merged = x[group_of, :, torch.arange(length)].transpose(0, 1)  # (B, L, Dd)
    patches = m.decoder_pred(merged).view(batch, rows, rows, p, p, 3)
    image = patches.permute(0, 5, 1, 3, 2, 4).reshape(batch, 3, rows * p, rows * p)
    return m.output_conv(image) * m.std + m.mean


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def compare_with_reference_structure(threads: int, repeats: int) -> None:
    """Time both passes on the fixture's config and a batch of 64 at 32 px (noise mode); check outputs."""
    checkpoint = SHARED / "reference" / "ref_small.safetensors"
    if not checkpoint.is_file():
        print(f"skipping the side-by-side comparison: {checkpoint} not found")
        return
    torch.set_num_threads(threads)
    purifier = Purifier.from_reference(checkpoint)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 32, 32, generator=generator)
    image_noise = torch.randn(64, 3, 32, 32, generator=generator)
    feature_noise = torch.randn(64, 64, purifier.config.decoder_width, generator=generator)
    config = purifier.config
    blocks = (timm_blocks(purifier.encoder_blocks, config.encoder_heads, config.norm_eps),
              timm_blocks(purifier.decoder_blocks, config.decoder_heads, config.norm_eps))
    with torch.no_grad():
        ours = purifier(images, image_noise=image_noise, feature_noise=feature_noise, clamp=False)
        theirs = reference_structured(purifier, images, image_noise, feature_noise, *blocks)
        t_ours = _time(lambda: purifier(images, image_noise=image_noise, feature_noise=feature_noise), repeats,
                       torch.device("cpu"))
        t_ref = _time(lambda: reference_structured(purifier, images, image_noise, feature_noise, *blocks), repeats,
                      torch.device("cpu"))
    print(f"\nFixture config, batch 64 at 32 px, noise mode, {threads} CPU threads (best of {repeats}); the "
          f"reference implementation itself was measured at about {REFERENCE_SECONDS} s on 2 threads:")
    print(f"  reference-structured pass {t_ref:.3f} s | ours {t_ours:.3f} s | speed-up {t_ref / t_ours:.2f}x | "
          f"max |difference| {float((ours - theirs).abs().max()):.1e}")


def measure_one(preset: str, batch: int, device_name: str, threads: int, repeats: int) -> dict:
    """Throughput and peak memory of one preset and batch size (run in its own process for CPU memory)."""
    torch.set_num_threads(threads)
    device = select_device(device_name)
    config = PurifierConfig.preset(preset)
    purifier = Purifier(config).eval().to(device)
    images = torch.rand(batch, 3, config.image_size, config.image_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        seconds = _time(lambda: purifier(images), repeats, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return dict(preset=preset, batch=batch, device=device.type, seconds=seconds,
                images_per_s=batch / seconds, peak_mib=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=list(BATCHES))
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.device, args.threads, args.repeats)))
        return
    rows = []
    for preset in args.presets:
        for batch in BATCHES[preset]:
            command = [sys.executable, __file__, "--one", preset, str(batch), "--device", args.device,
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    memory = "peak GPU MiB" if rows and rows[0]["device"] == "cuda" else "peak RSS MiB"
    print(f"| preset | batch | device | s / batch | images / s | {memory} |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['batch']} | {r['device']} | {r['seconds']:.3f} | {r['images_per_s']:.1f} | "
              f"{r['peak_mib']:.0f} |")
    compare_with_reference_structure(args.threads, args.repeats)


if __name__ == "__main__":
    main()
