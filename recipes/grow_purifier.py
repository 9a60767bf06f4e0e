"""Deepen a trained purifier, or give it the noisy-pixel skip path or the pixel head, without changing what it
computes, so that a campaign can continue in a larger model or a new design instead of starting one from scratch.

    python recipes/grow_purifier.py impure/cifar10 --out runs/init-cifar10-deep --encoder-depth 6 \
        --decoder-depth 3 [--force]
    python recipes/grow_purifier.py impure/cifar10 --out runs/init-cifar10-skip --noisy-skip
    python recipes/grow_purifier.py impure/cifar10 --out runs/init-cifar10-pixel --pixel-head 32

The skip path (`PurifierConfig.noisy_skip`) starts closed (its per-patch map is zero), and so does the pixel head
(`PurifierConfig.pixel_head_width`, its last convolution is zero), so the output is the source's until training
opens them.

The new blocks are pre-norm ViT blocks whose residual branches end in zeros (attention output projection
and second MLP layer, weights and biases), so each is the identity at first and the grown purifier's output
equals the source's; training then opens them up. Encoder blocks are appended after the last one (the
fusion taps keep their indices); decoder blocks are inserted before the last one (the block that computes
the hidden tokens alone). The script checks that the two purifiers agree on 100 test_dev images under the
same noise (maximum absolute difference, default bound 1e-5) and writes float32 weights with save_pretrained.
SOURCE is a model id, a save_pretrained folder or a training checkpoint.pt (its EMA weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from export_purifier import holds_weights, load_source

from impure import Purifier
from impure.data import load_npz

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def grow(source: Purifier, encoder_depth: int | None = None, decoder_depth: int | None = None,
         noisy_skip: bool = False, pixel_head_width: int = 0) -> Purifier:
    """A float32 copy of `source` with `encoder_depth` / `decoder_depth` blocks (default: the source's) and,
    with `noisy_skip`, the closed noisy-pixel skip path, with `pixel_head_width`, a closed pixel head of that
    many channels, that computes the same output."""
    old = source.config
    encoder_depth = old.encoder_depth if encoder_depth is None else encoder_depth
    decoder_depth = old.decoder_depth if decoder_depth is None else decoder_depth
    if encoder_depth < old.encoder_depth or decoder_depth < old.decoder_depth:
        raise ValueError(f"can only deepen: the source has {old.encoder_depth} encoder / {old.decoder_depth} "
                         f"decoder blocks, asked for {encoder_depth} / {decoder_depth}")
    if noisy_skip and old.noisy_skip:
        raise ValueError("the source already has the noisy-pixel skip path (noisy_skip)")
    if pixel_head_width and old.pixel_head_width:
        raise ValueError(f"the source already has a pixel head (pixel_head_width {old.pixel_head_width})")
    grown = Purifier(old.replace(encoder_depth=encoder_depth, decoder_depth=decoder_depth,
                                 noisy_skip=noisy_skip or old.noisy_skip,
                                 pixel_head_width=pixel_head_width or old.pixel_head_width))
    for block in [*grown.encoder_blocks[old.encoder_depth:],
                  *grown.decoder_blocks[old.decoder_depth - 1:decoder_depth - 1]]:
        for layer in (block.attn.proj, block.mlp.fc2):  # the residual branches' last layers
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    # Decoder: the source's blocks before its last keep their index; its last block becomes the new last.
    last = old.decoder_depth - 1
    renamed = {}
    for name, tensor in source.state_dict().items():
        if name.startswith(f"decoder_blocks.{last}."):
            name = f"decoder_blocks.{decoder_depth - 1}." + name.removeprefix(f"decoder_blocks.{last}.")
        renamed[name] = tensor.float()
    missing, unexpected = grown.load_state_dict(renamed, strict=False)
    new_blocks = {f"encoder_blocks.{i}." for i in range(old.encoder_depth, encoder_depth)}
    new_blocks |= {f"decoder_blocks.{i}." for i in range(last, decoder_depth - 1)}
    if noisy_skip:
        new_blocks.add("skip_proj.")  # zero-initialised by Purifier.init_weights
    if pixel_head_width:
        new_blocks.add("pixel_head.")  # its last convolution zero-initialised
    stray = [k for k in missing if not any(k.startswith(prefix) for prefix in new_blocks)]
    if stray or unexpected:
        raise RuntimeError(f"weights did not map onto the grown purifier: missing {stray}, unexpected {unexpected}")
    return grown.eval()


def largest_difference(a: Purifier, b: Purifier, images: torch.Tensor, seed: int = 0) -> float:
    """Largest absolute difference between the two purifiers' outputs under the same noise."""
    with torch.no_grad():
        out_a = a(images, generator=torch.Generator().manual_seed(seed))
        out_b = b(images, generator=torch.Generator().manual_seed(seed))
    return (out_a - out_b).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a model id, a save_pretrained folder or a checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the grown purifier to")
    parser.add_argument("--encoder-depth", type=int, help="encoder blocks (default: the source's)")
    parser.add_argument("--decoder-depth", type=int, help="decoder blocks (default: the source's)")
    parser.add_argument("--noisy-skip", action="store_true", help="add the closed noisy-pixel skip path")
    parser.add_argument("--pixel-head", type=int, default=0, metavar="CHANNELS",
                        help="add a closed pixel head of this many channels (default 0: none)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest output difference allowed")
    parser.add_argument("--force", action="store_true", help="replace existing weights in --out")
    args = parser.parse_args(argv)
    if holds_weights(args.out, args.force):
        return 1

    source = load_source(args.source).float()
    try:
        grown = grow(source, args.encoder_depth, args.decoder_depth, args.noisy_skip, args.pixel_head)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    images, _ = load_npz(SHARED / "data" / "cifar10" / "test_dev.npz")
    difference = largest_difference(source, grown, images[:100])
    print(f"grown purifier vs source: largest output difference {difference:.2e} (100 test_dev images)")
    if difference > args.tolerance:
        print(f"above --tolerance {args.tolerance}: not written", file=sys.stderr)
        return 1
    grown.save_pretrained(args.out)
    params = sum(p.numel() for p in grown.parameters()) / 1e6
    config = grown.config
    print(f"wrote {args.out}: {config.encoder_depth} encoder / {config.decoder_depth} decoder blocks"
          f"{', noisy-pixel skip path' if config.noisy_skip else ''}"
          f"{f', a {config.pixel_head_width}-channel pixel head' if config.pixel_head_width else ''}, "
          f"{params:.2f} M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
