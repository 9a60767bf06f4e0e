#!/bin/bash
# Round 2's measurement, as PILOTS.md fixed it (run after the conv run stopped).
set -euo pipefail
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export OMP_NUM_THREADS=${THREADS:-2}
C=recipes/candidates
R=benchmarks/results/conv-cifar10
python recipes/export_purifier.py runs/pilot-conv/checkpoint.pt --out $C/conv-pilot2-conv --noise-t 80,120 --force
python benchmarks/frontier.py --limit 250 --classifier cifar_resnet56 --defences none --seeds 0,1,2 \
  --noise-t 40/60,80/120,120/180 --purifier $C/conv-pilot2-conv --label "conv@R2" \
  --purifier impure/cifar10 --label "bundled impure/cifar10" --noise-t 80/120 \
  --no-progress --out $R/pilot2-frontier
python benchmarks/fidelity.py --purifier $C/conv-pilot2-conv --label "conv@R2" \
  --purifier impure/cifar10 --label "bundled impure/cifar10" --out $R/pilot2-fidelity
python benchmarks/purifier_speed.py --against cifar_resnet56 --purifier impure/cifar10 --purifier $C/conv-pilot2-conv \
  --threads 1 --rounds 7 --out $R/pilot2-speed
python benchmarks/frontier_plot.py $R/pilot2-frontier/seed-means.json $R/pilot1-frontier/seed-means.json \
  --out $R/pilot2-frontier/frontier.png --title "Round 2: the conv at ~270k images vs the bundled ViT (seed means)"
python $R/pilot2_rule.py | tee $R/pilot2-rule.md
echo done
