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
    attacked with the RNG seeded from (seed, k), so a resumed dataset equals an uninterrupted one.

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
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {"format": 1, "count": len(dataset), "shard_size": shard_size, "seed": seed, **description}
    manifest_path = output / SHARD_MANIFEST
    done: list[str] = []
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded = {k: v for k, v in old.items() if k not in ("shards", "complete")}
        same = recorded == json.loads(json.dumps(settings))
        if same:
            done = list(old.get("shards", []))
        elif not force:
            raise ValueError(f"{output} holds an adversarial dataset made with other settings; pass --force "
                             "(force=True) to replace it, or choose another folder")
        else:
            for name in old.get("shards", []):
                for path in shard_files(output, name).values():
                    path.unlink(missing_ok=True)
    elif any(output.iterdir()) and not force:
        raise ValueError(f"{output} is not empty and is not an adversarial dataset; choose an empty folder "
                         "or pass --force")
    device = torch.device(device)
    shards = -(-len(dataset) // shard_size)
    bar = tqdm(total=len(dataset), initial=min(len(done) * shard_size, len(dataset)), disable=not progress,
               desc="attacking", unit="img", dynamic_ncols=True)
    for index in range(len(done), shards):
        start, stop = index * shard_size, min((index + 1) * shard_size, len(dataset))
        parts: list[tuple[torch.Tensor, ...]] = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed * 1_000_003 + index)
            for first in range(start, stop, batch_size):
                images, labels = fetch_batch(dataset, list(range(first, min(first + batch_size, stop))))[:2]
                adversarial = attack(images.to(device), labels.to(device)).detach().cpu()
                parts.append((adversarial, images, labels))
                bar.update(images.shape[0])
        name = f"shard-{index:05d}"
        write_adversarial_shard(output, name, *(torch.cat(column) for column in zip(*parts, strict=True)))
        done.append(name)
        atomic_write(manifest_path,
                     json.dumps({**settings, "shards": done, "complete": index == shards - 1}, indent=2))
    bar.close()
    return output
