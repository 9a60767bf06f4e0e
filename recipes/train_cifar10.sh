#!/usr/bin/env bash
# One stretch of the campaign that trains the bundled purifier "impure/cifar10" on a CPU, from the
# repository root with ../shared beside it:
#   MINUTES=150 bash recipes/train_cifar10.sh
# Each stretch stops (checkpointed) after $MINUTES minutes and may be cut off at any moment before: the
# checkpoint is written every 20 steps. The next stretch continues the run:
#   - from runs/cifar10-campaign/checkpoint.pt when it exists (exact resume);
#   - else, on a machine without the run folder, from the last committed weights src/impure/weights/cifar10
#     (the campaign's durable checkpoint) in a new run folder, with a short warm-up;
#   - else (the very first stretch) from the bundled impure/cifar10-s.
# Afterwards, export the EMA weights of the checkpoint as the bundled model:
#   python recipes/export_purifier.py runs/cifar10-campaign/checkpoint.pt --out src/impure/weights/cifar10 \
#       --strength <chosen on test_dev 0-249> --force
# The shipped stretches, their exact commands and the images they saw are listed in recipes/CAMPAIGN.md.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
minutes="${MINUTES:-150}"
config=configs/cifar10-campaign.toml
run=runs/cifar10-campaign
if [[ -f "$run/checkpoint.pt" ]]; then
    impure train "$config" --resume --time-limit "$minutes" "$@"
elif [[ -f src/impure/weights/cifar10/model.safetensors ]]; then
    run="runs/cifar10-campaign-$(date +%Y%m%d-%H%M)"
    impure train "$config" --set model.init=impure/cifar10 --set optim.warmup_steps=50 \
        --set "output_dir=$run" --time-limit "$minutes" "$@"
else
    impure train "$config" --time-limit "$minutes" "$@"
fi
