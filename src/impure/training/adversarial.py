"""Write a dataset of (adversarial, clean, label) triples in shards, resumably, for fine-tuning."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from impure._util.atomic import atomic_write
from impure._util.distributed import current_context
from impure.data import SHARD_MANIFEST, fetch_batch, shard_files, write_adversarial_shard

__all__ = ["make_adversarial_dataset"]


def make_adversarial_dataset(dataset: Dataset, attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                             output: str | os.PathLike, *, description: dict[str, Any],
                             shard_size: int = 5000, batch_size: int = 256, seed: int = 0,
                             device: torch.device | str = "cpu", force: bool = False,
                             progress: bool = True) -> Path:
    """Attack every image of `dataset` and write the triples to `output` as shards plus `manifest.json`.

    Each shard is written atomically and recorded in the manifest as soon as it is complete, so an
    interrupted run continues where it stopped when called again with the same settings. Shard k is
    attacked with the RNG seeded from (seed, k), so a resumed dataset equals an uninterrupted one. In a process
    group (`torchrun`, set up by the caller) each process attacks every N-th shard and rank 0 writes the
    manifest at the end; the files are those one process writes.

    Args:
        dataset: labelled clean images (items (image, label)).
        attack: `attack(images, labels) -> adversarial images`, e.g. `impure.attacks.PGD(model, ...)`.
        output: the folder to write (created).
        description: JSON-ready settings recorded in the manifest (source, classifier, attack, ...);
            a folder written with other settings is not touched unless `force`.
        shard_size: triples per shard file.
        batch_size: images per attack call.
        seed: seed of the attacks' randomness.
        device: where to run the attack.
        force: discard a folder written with other settings.
        progress: show a progress bar.

    Returns:
        The output folder, readable with `impure.data.AdversarialShards`.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset to attack is empty")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size}, {batch_size}")
    context = current_context()
    output = Path(output)
    settings = {"format": 1, "count": len(dataset), "shard_size": shard_size, "seed": seed, **description}
    names = [f"shard-{index:05d}" for index in range(-(-len(dataset) // shard_size))]
    done = _finished_shards(output, settings, names, force, replace=context.is_main)
    if context.is_main:  # a manifest from the start, so that a folder of shards is always recognised
        _write_manifest(output, settings, names, done)
    context.barrier()  # every process has read the folder before any shard is written
    device = torch.device(device)
    mine = [index for index in context.share(range(len(names))) if names[index] not in done]
    sizes = {index: min((index + 1) * shard_size, len(dataset)) - index * shard_size for index in mine}
    bar = tqdm(total=sum(sizes.values()), disable=not progress or not context.is_main, desc="attacking", unit="img",
               dynamic_ncols=True)
    for index in mine:
        start, stop = index * shard_size, index * shard_size + sizes[index]
        parts: list[tuple[torch.Tensor, ...]] = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed * 1_000_003 + index)
            for first in range(start, stop, batch_size):
                images, labels = fetch_batch(dataset, list(range(first, min(first + batch_size, stop))))[:2]
                adversarial = attack(images.to(device), labels.to(device)).detach().cpu()
                parts.append((adversarial, images, labels))
                bar.update(images.shape[0])
        write_adversarial_shard(output, names[index], *(torch.cat(column) for column in zip(*parts, strict=True)))
        done.add(names[index])
        if not context.enabled:  # one process: the manifest follows every shard (several: the files tell)
            _write_manifest(output, settings, names, done)
    bar.close()
    context.barrier()
    if context.is_main and context.enabled:
        _write_manifest(output, settings, names, _finished_shards(output, settings, names, False, replace=False))
    context.barrier()
    return output


def _finished_shards(output: Path, settings: dict[str, Any], names: list[str], force: bool,
                     replace: bool) -> set[str]:
    """The shards of `names` already written in `output` with `settings` (all three files present: each is
    written atomically); a folder of other settings is an error, or with `force` emptied (if `replace`)."""
    manifest_path = output / SHARD_MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded = {k: v for k, v in old.items() if k not in ("shards", "complete")}
        if recorded != json.loads(json.dumps(settings)):
            if not force:
                raise ValueError(f"{output} holds an adversarial dataset made with other settings; pass --force "
                                 "(force=True) to replace it, or choose another folder")
            if replace:
                for path in output.glob("shard-*.npy"):
                    path.unlink(missing_ok=True)
            return set()
    elif output.is_dir() and any(output.iterdir()) and not force:
        raise ValueError(f"{output} is not empty and is not an adversarial dataset; choose an empty folder "
                         "or pass --force")
    return {name for name in names if all(path.is_file() for path in shard_files(output, name).values())}


def _write_manifest(output: Path, settings: dict[str, Any], names: list[str], done: set[str]) -> None:
    """manifest.json: the settings and the finished shards in order; "complete" once every shard is there."""
    finished = [name for name in names if name in done]
    atomic_write(output / SHARD_MANIFEST,
                 json.dumps({**settings, "shards": finished, "complete": len(finished) == len(names)}, indent=2))
