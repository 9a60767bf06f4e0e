"""`impure purify`: purify image files into same-named PNGs."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from .._util.atomic import atomic_path
from . import options

DEFAULT_PURIFIER = "impure/cifar10"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "purify", help="purify image files (PNG/JPEG, any size) into PNGs",
        description="Purify image files into same-named PNGs in OUTDIR. Folders are searched recursively and "
                    "their layout is kept; grey images stay grey. Unreadable files are reported and skipped; "
                    "existing outputs are never overwritten without --force. Images larger than the purifier "
                    "supports (twice its training size per side, 64 px for the CIFAR-10 purifiers) are purified "
                    "tile by tile.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    options.add_output(parser, "the purified PNGs into this folder", required=True, metavar="OUTDIR")
    options.add_purifier_options(parser, DEFAULT_PURIFIER)
    options.add_device(parser)
    options.add_dtype(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="images (or tiles) per batch (default 64)")
    options.add_seed(parser)
    options.add_no_progress(parser)
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing output files (default: keep them)")
    parser.set_defaults(func=run)


def _collect(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(source file, output path relative to OUTDIR) for every image file named or inside a folder."""
    from ..data import IMAGE_EXTENSIONS

    pairs = []
    for item in inputs:
        if item.is_dir():
            files = sorted(f for f in item.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            pairs += [(f, f.relative_to(item).with_suffix(".png")) for f in files]
        elif item.is_file():
            pairs.append((item, Path(item.name).with_suffix(".png")))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    targets = [target for _, target in pairs]
    clashes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashes:
        raise ValueError(f"several inputs would be written to the same output file: {clashes[:5]}")
    return pairs


# PIL modes of single-channel (grey) images: their outputs are written as grey PNGs.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _save_png_atomic(image, path: Path) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    from ..device import select_device, select_dtype
    from ..hub import Purifier
    from ..tiling import purify_tiled

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    pairs = _collect(args.inputs)
    existing = [str(args.output / target) for _, target in pairs if (args.output / target).exists()]
    if existing and not args.force:
        raise ValueError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --force to overwrite")
    device = select_device(args.device)
    purifier = Purifier.from_pretrained(args.purifier, device=device, dtype=select_dtype(args.dtype, device))
    purifier.set_strength(args.strength)  # the options refused --strength with --noise-t
    if args.noise_t is not None:
        purifier.set_noise_t(*args.noise_t)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    trained = purifier.config.image_size
    failed, noted = [], False
    with tqdm(total=len(pairs), desc="purifying", unit="image", disable=args.no_progress) as progress:
        for start in range(0, len(pairs), args.batch_size):
            chunk = pairs[start:start + args.batch_size]
            by_size: dict[tuple[int, ...], list[tuple[Path, np.ndarray, bool]]] = defaultdict(list)
            for source, target in chunk:
                try:
                    with Image.open(source) as image:
                        grey = image.mode in _GREY_MODES
                        pixels = np.asarray(image.convert("RGB"))
                except (OSError, UnidentifiedImageError, SyntaxError) as error:
                    failed.append(f"{source}: {error}")
                    continue
                by_size[pixels.shape].append((target, pixels, grey))
            for size, items in by_size.items():  # one batch per image size
                if not noted and not trained / 2 <= max(size[:2]) <= 2 * trained:
                    noted = True
                    progress.write(f"note: {size[0]}x{size[1]} images are far from the {trained}-px images this "
                                   f"purifier was trained on; it purifies them as they are (or as overlapping "
                                   f"{trained}-px tiles), which may remove detail a purifier trained at their size "
                                   "would keep")
                images = torch.from_numpy(np.stack([p for _, p, _ in items])).permute(0, 3, 1, 2)
                images = images.float().div(255).to(device)
                with torch.inference_mode():
                    if max(images.shape[-2:]) > purifier.config.max_input_size:
                        purified = purify_tiled(purifier, images, purifier.config.image_size, args.batch_size,
                                                generator)
                    else:
                        purified = purifier(images, generator=generator)
                arrays = purified.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                for (target, _, grey), array in zip(items, arrays, strict=True):
                    # A grey input is purified as RGB (the purifier's input) and written back as grey.
                    output = Image.fromarray(array)
                    _save_png_atomic(output.convert("L") if grey else output, args.output / target)
            progress.update(len(chunk))
    for message in failed:
        print(f"skipped unreadable file {message}")
    print(f"purified {len(pairs) - len(failed)} image(s) into {args.output}; skipped {len(failed)}")
    return 1 if failed and len(failed) == len(pairs) else 0
