"""Make the CIFAR-10 sample set shipped for `impure demo`: the first two test images of every class.

    python recipes/make_demo_samples.py [--out src/impure/samples/cifar10_test_samples.npz]

It reads ../shared/data/cifar10/test_dev.npz (the first 500 images of the official CIFAR-10 test set,
lossless) and writes 20 images, one of each class (airplane ... truck) and then a second of each class, so
that `impure demo --limit 10` still shows every class. Keys: `images` (uint8 20x32x32x3, RGB), `labels`
(int64), `test_index` (int64, the image's index in the official test set) and `classes` (the 10 names).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PER_CLASS = 2


def pick(labels: np.ndarray, classes: int, per_class: int) -> np.ndarray:
    """Row indices of the first `per_class` images of each class, ordered round by round, class by class."""
    firsts = [np.flatnonzero(labels == label)[:per_class] for label in range(classes)]
    short = [label for label, rows in enumerate(firsts) if len(rows) < per_class]
    if short:
        raise ValueError(f"classes {short} have fewer than {per_class} images")
    return np.stack(firsts, axis=1).reshape(-1)  # (per_class, classes) -> round-major order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SHARED / "data" / "cifar10" / "test_dev.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "impure" / "samples" / "cifar10_test_samples.npz")
    args = parser.parse_args()
    with np.load(args.source, allow_pickle=False) as archive:
        data = {key: archive[key] for key in ("images", "labels", "test_index", "classes")}
    rows = pick(data["labels"], len(data["classes"]), PER_CLASS)
    arrays = {
        "images": data["images"][rows].astype(np.uint8),
        "labels": data["labels"][rows].astype(np.int64),
        "test_index": data["test_index"][rows].astype(np.int64),
        "classes": data["classes"].astype(str),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; a shipped package file must be readable
        os.replace(temporary, args.out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    print(f"wrote {len(rows)} images to {args.out}; test-set indices {arrays['test_index'].tolist()}")


if __name__ == "__main__":
    main()
