#!/usr/bin/env bash
# One stretch of the robust fine-tune that makes the bundled purifier "impure/cifar10-robust" on a CPU, from
# the repository root with ../shared beside it:
#   MINUTES=120 bash recipes/train_cifar10_robust.sh [impure train options]
# It resumes the newest runs/cifar10-robust[-<date>] holding a checkpoint, else continues from the committed
# src/impure/weights/cifar10-robust with a 10-step warm-up, else (the very first stretch) starts from the
# bundled impure/cifar10 exported at noise t 160/240 with its training noise narrowed around it
# (runs/init-cifar10-s8, made here if missing; recipes/stretch.sh). The shipped first stretch started from impure/cifar10 as of commit b73dc0e (the
# campaign's stretch 1, nominal t 20/30: strength 8). Afterwards, export the EMA weights of the checkpoint:
#   python recipes/export_purifier.py runs/cifar10-robust/checkpoint.pt --out src/impure/weights/cifar10-robust --force
# The shipped stretches and their exact commands are listed in recipes/CAMPAIGN.md.
MINUTES="${MINUTES:-120}"
source "$(dirname "$0")/stretch.sh"

first_stretch() {
    if [[ ! -f runs/init-cifar10-s8/model.safetensors ]]; then
        python recipes/export_purifier.py src/impure/weights/cifar10 --out runs/init-cifar10-s8 --noise-t 160,240 \
            --train-noise-t 80,240,120,360
    fi
    impure train "$@"
}

run_stretch configs/cifar10-robust.toml runs/cifar10-robust impure/cifar10-robust 10 "$@"
