"""Peak memory of a white-box evaluation against the number of EOT draws: it should stay flat, since EOT
averages the draws' gradients in chunks of at most --batch-size images x draws.

    python benchmarks/eot_memory.py [--draws 1,2,4,8,16] [--images 32] [--batch-size 32]

Each row is `impure evaluate` on the first --images CIFAR-10 test_dev images with the bundled purifier and
the shared ResNet-20, FGSM and PGD-10 under both threat models, run in its own process so that its peak
resident memory (or peak CUDA memory) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

_CHILD = """
import json, resource, sys, torch
from impure.evaluation import evaluate
draws, images, batch, data, weights = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
result = evaluate("cifar_resnet20", data, "impure/cifar10-s", attacks=["fgsm", "pgd"], threat="both",
                  eot_samples=draws, limit=images, batch_size=batch, classifier_weights=weights, progress=False)
peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"peak_mib": peak / 2**20, "white_box_pgd": result.robust_accuracy("pgd", "white-box")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", default="1,2,4,8,16", help="comma-separated EOT draws")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    data = SHARED / "data" / "cifar10" / "test_dev.npz"
    weights = SHARED / "models" / "cifar10_resnet20.safetensors"
    if not data.is_file():
        sys.exit(f"{data} not found: this benchmark reads the shared CIFAR-10 test images")
    print("| EOT draws | peak memory (MiB) | white-box PGD-10 robust accuracy (%) | seconds |")
    print("|---:|---:|---:|---:|")
    for draws in (int(d) for d in args.draws.split(",")):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _CHILD, str(draws), str(args.images), str(args.batch_size),
                               str(data), str(weights)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {draws} | {row['peak_mib']:.0f} | {100 * row['white_box_pgd']:.1f} | "
              f"{time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
