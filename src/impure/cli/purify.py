"""`impure purify`: purify image files into same-named PNGs."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._util.atomic import atomic_path, atomic_write
from ..demo import DEFAULT_PURIFIER
from . import options

# Tiles per purifier call for a large image: fixed, so that an image's noise draws never depend on --batch-size.
TILE_BATCH = 64
REPORT_NAME = "purify-report.json"  # beside the outputs: how many were purified, which files failed and why


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "purify", help="purify image files (PNG/JPEG, any size) into PNGs",
        description="Purify image files into same-named PNGs in OUTDIR. Folders are searched recursively and "
                    "their layout is kept; grey images stay grey and an alpha channel is carried through untouched. "
                    "Files that cannot be read are listed at the end and in purify-report.json beside the outputs, "
                    "and the exit status is then 1 (0 when every file was purified); "
                    "existing outputs are never overwritten without --force. Images larger than the purifier "
                    "supports (twice its training size per side, 64 px for the CIFAR-10 purifiers) are purified "
                    "tile by tile. Under torchrun each process purifies its share of the files, with the same "
                    "outputs as one process.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    options.add_output(parser, "the purified PNGs into this folder", required=True, metavar="OUTDIR")
    options.add_purifier_options(parser, DEFAULT_PURIFIER)  # the demo's, the recommended one
    options.add_device(parser)
    options.add_dtype(parser)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per batch (default 64; a large image goes as its tiles, 64 at a time)")
    options.add_seed(parser)
    options.add_no_progress(parser)
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--resume", action="store_true",
                      help="skip the outputs that already exist (each was written whole, atomically) and purify "
                           "the rest: an interrupted run continues and ends with the same files")
    keep.add_argument("--force", action="store_true", help="overwrite existing output files (default: keep them)")
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
    from .._util.distributed import init_distributed
    from ..device import select_device, select_dtype

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    pairs = _collect(args.inputs)
    existing = {target for _, target in pairs if (args.output / target).exists()}
    if existing and not (args.resume or args.force):
        example = next(args.output / target for _, target in pairs if target in existing)
        raise ValueError(f"{len(existing)} output file(s) exist, e.g. {example}; pass --resume to continue "
                         "or --force to overwrite")
    if existing and args.resume:  # outputs are written atomically: any that exists is complete
        pairs = [(source, target) for source, target in pairs if target not in existing]
    device = select_device(args.device)
    context = init_distributed(device.type)
    try:
        context.barrier()  # every process has looked at the outputs before any is written
        if existing and args.resume and context.is_main:
            print(f"resuming: {len(existing)} output(s) already written, {len(pairs)} to purify")
        purifier = options.load_purifier(args, device=device, dtype=select_dtype(args.dtype, device))
        share = context.share(pairs)  # every N-th file under torchrun: each image's noise is its own anyway
        failed = _purify_files(share, purifier, args, device, show=not args.no_progress and context.is_main)
        failed = [failure for part in context.gather(failed) for failure in part]
        if context.is_main:
            report = {"purified": len(pairs) - len(failed), "failed": failed}
            atomic_write(args.output / REPORT_NAME, json.dumps(report, indent=2) + "\n")
            for failure in failed:
                print(f"failed: {failure['file']}: {failure['error']}")
            print(f"purified {report['purified']} image(s) into {args.output}; {len(failed)} failed "
                  f"(listed in {args.output / REPORT_NAME})")
        context.barrier()
    finally:
        context.close()
    return 1 if failed else 0


def _purify_files(pairs: list[tuple[Path, Path]], purifier: Any, args: argparse.Namespace, device: Any,
                  show: bool) -> list[dict[str, str]]:
    """Purify `pairs` (source, output relative to --output) in batches; the files that could not be read."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    from ..defences.tiling import purify_tiled

    trained = purifier.config.image_size
    failed: list[dict[str, str]] = []
    noted = alpha_noted = False
    with tqdm(total=len(pairs), desc="purifying", unit="image", disable=not show) as progress:
        for start in range(0, len(pairs), args.batch_size):
            chunk = pairs[start:start + args.batch_size]
            by_size: dict[tuple[int, ...], list[tuple[Path, np.ndarray, bool, Any]]] = defaultdict(list)
            for source, target in chunk:
                try:
                    with Image.open(source) as image:
                        grey = image.mode in _GREY_MODES
                        alpha = _alpha(image)
                        pixels = np.asarray(image.convert("RGB"))
                except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
                    failed.append({"file": str(source), "error": f"{type(error).__name__}: {error}"})
                    continue
                if alpha is not None and not alpha_noted:
                    alpha_noted = True
                    progress.write(f"note: {source.name} has an alpha channel; it is carried through untouched "
                                   "(only the colour is purified)")
                by_size[pixels.shape].append((target, pixels, grey, alpha))
            for size, items in by_size.items():  # one batch per image size
                if not noted and not trained / 2 <= max(size[:2]) <= 2 * trained:
                    noted = True
                    progress.write(f"note: {size[0]}x{size[1]} images are far from the {trained}-px images this "
                                   f"purifier was trained on; it purifies them as they are (or as overlapping "
                                   f"{trained}-px tiles), which may remove detail a purifier trained at their size "
                                   "would keep")
                images = torch.from_numpy(np.stack([p for _, p, _, _ in items])).permute(0, 3, 1, 2)
                images = images.float().div(255).to(device)
                # Each image's noise comes from its own generator, seeded by (--seed, its output path): the
                # output does not depend on the batch size, the order, the process, or the other images.
                generators = [_image_generator(args.seed, target, device) for target, *_ in items]
                with torch.inference_mode():
                    if max(images.shape[-2:]) > purifier.config.max_input_size:
                        purified = torch.cat([purify_tiled(purifier, image[None], purifier.config.image_size,
                                                           TILE_BATCH, generator)
                                              for image, generator in zip(images, generators, strict=True)])
                    else:
                        purified = purifier(images, **_noise(purifier, images, generators))
                arrays = purified.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                for (target, _, grey, alpha), array in zip(items, arrays, strict=True):
                    # A grey input is purified as RGB (the purifier's input) and written back as grey; an alpha
                    # channel is put back as it was.
                    output = Image.fromarray(array)
                    output = output.convert("L") if grey else output
                    if alpha is not None:
                        output.putalpha(alpha)
                    _save_png_atomic(output, args.output / target)
            progress.update(len(chunk))
    return failed


def _image_generator(seed: int, target: Path, device: Any) -> Any:
    """A generator for one image, seeded by (seed, the image's output path relative to OUTDIR)."""
    import torch

    digest = hashlib.sha256(f"{seed}\0{target.as_posix()}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _noise(purifier: Any, images: Any, generators: list[Any]) -> dict[str, Any]:
    """The purifier's noise for a batch, each image's drawn from its own generator (`Purifier.noise_shapes`)."""
    import torch

    shapes = purifier.noise_shapes(1, *images.shape[-2:])
    return {name: torch.cat([torch.randn(shape, generator=g, device=images.device, dtype=images.dtype)
                             for g in generators]) for name, shape in shapes.items()}


def _alpha(image: Any) -> Any:
    """The alpha channel of a Pillow image ("A" band, or a palette's transparency) as an "L" image, or None."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None
