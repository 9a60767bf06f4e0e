#!/usr/bin/env bash
# One stretch of the robust fine-tune that makes the bundled purifier "impure/cifar10-robust" on a CPU, from
# the repository root with ../shared beside it:
#   MINUTES=120 bash recipes/train_cifar10_robust.sh
# Each stretch stops (checkpointed every 10 steps) after $MINUTES minutes and may be cut off before. The
# next stretch continues the run:
#   - from runs/cifar10-robust/checkpoint.pt when it exists (exact resume);
#   - else, on a machine without the run folder, from the last committed weights
#     src/impure/weights/cifar10-robust (the durable checkpoint) in a new run folder, with a short warm-up;
#   - else (the very first stretch) from the bundled impure/cifar10 exported at strength 8 with its training
#     noise narrowed around it (runs/init-cifar10-s8, made here if missing).
# Afterwards, export the EMA weights of the checkpoint:
#   python recipes/export_purifier.py runs/cifar10-robust/checkpoint.pt --out src/impure/weights/cifar10-robust --force
# The shipped stretches and their exact commands are listed in recipes/CAMPAIGN.md.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
minutes="${MINUTES:-120}"
config=configs/cifar10-robust.toml
run=runs/cifar10-robust
if [[ -f "$run/checkpoint.pt" ]]; then
    impure train "$config" --resume --time-limit "$minutes" "$@"
elif [[ -f src/impure/weights/cifar10-robust/model.safetensors ]]; then
    run="runs/cifar10-robust-$(date +%Y%m%d-%H%M)"
    impure train "$config" --set model.init=impure/cifar10-robust --set optim.warmup_steps=10 \
        --set "output_dir=$run" --time-limit "$minutes" "$@"
else
    if [[ ! -f runs/init-cifar10-s8/model.safetensors ]]; then
        python recipes/export_purifier.py src/impure/weights/cifar10 --out runs/init-cifar10-s8 --strength 8 \
            --train-noise-t 80,240,120,360
    fi
    impure train "$config" --time-limit "$minutes" "$@"
fi
