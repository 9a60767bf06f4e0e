#!/bin/bash
# Round 1's measurement, as PILOTS.md fixed it (run after both pilots stopped).
set -euo pipefail
cd /work/main
source .venv/bin/activate
export OMP_NUM_THREADS=2
C=recipes/candidates
python recipes/export_purifier.py runs/pilot-conv/checkpoint.pt --out $C/conv-pilot1-conv --noise-t 80,120
python recipes/export_purifier.py runs/pilot-vit/checkpoint.pt --out $C/conv-pilot1-vit --noise-t 80,120
VSTEP=$(python -c "import torch; print(torch.load('runs/pilot-vit/checkpoint.pt', weights_only=True)['step'])")
SNAP=$(python - "$VSTEP" <<'PY'
import sys, glob, torch
target = int(sys.argv[1])
steps = {path: torch.load(path, weights_only=True)["step"] for path in glob.glob("runs/pilot-conv-snapshots/*.pt")}
best = min(steps, key=lambda path: (abs(steps[path] - target), steps[path]))
print(best, steps[best])
PY
)
echo "vit final step $VSTEP; conv snapshot for equal images: $SNAP"
python recipes/export_purifier.py ${SNAP% *} --out $C/conv-pilot1-conv-equal-images --noise-t 80,120
echo "$VSTEP $SNAP" > benchmarks/results/conv-cifar10/pilot1-equal-images.txt
python benchmarks/frontier.py --limit 250 --classifier cifar_resnet56 --defences none --seeds 0,1,2 \
  --noise-t 40/60,80/120,120/180 \
  --purifier $C/conv-pilot1-conv --label "conv@T" \
  --purifier $C/conv-pilot1-conv-equal-images --label "conv@N" \
  --purifier $C/conv-pilot1-vit --label "vit@T" \
  --purifier impure/cifar10 --label "bundled impure/cifar10 (reference)" --noise-t 80/120 \
  --no-progress --out benchmarks/results/conv-cifar10/pilot1-frontier
python benchmarks/fidelity.py --purifier $C/conv-pilot1-conv --label "conv@T" --purifier $C/conv-pilot1-vit \
  --label "vit@T" --purifier impure/cifar10 --label "bundled impure/cifar10" \
  --out benchmarks/results/conv-cifar10/pilot1-fidelity
python benchmarks/purifier_speed.py --against cifar_resnet56 --purifier impure/cifar10 --purifier $C/conv-pilot1-conv \
  --threads 1 --rounds 7 --out benchmarks/results/conv-cifar10/pilot1-speed
python benchmarks/frontier_plot.py benchmarks/results/conv-cifar10/pilot1-frontier/seed-means.json --out benchmarks/results/conv-cifar10/pilot1-frontier/frontier.png --title "Round 1: conv vs ViT from scratch, 70 CPU-min each (seed means)"
python benchmarks/results/conv-cifar10/pilot1_rule.py | tee benchmarks/results/conv-cifar10/pilot1-rule.md
echo done
