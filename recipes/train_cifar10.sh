#!/usr/bin/env bash
# One stretch of the campaign that trains the bundled purifier "impure/cifar10" on a CPU, from the
# repository root with ../shared beside it:
#   MINUTES=150 bash recipes/train_cifar10.sh [impure train options, e.g. --set optim.cooldown_steps=...]
# It resumes the newest runs/cifar10-campaign[-<date>] holding a checkpoint, else continues from the committed
# src/impure/weights/cifar10 with a 50-step warm-up, else (the very first stretch) starts from the bundled
# impure/cifar10-s (recipes/stretch.sh). Afterwards, export the EMA weights of the checkpoint as the bundled
# model, at the noise timesteps chosen on test_dev 0-249 (the shipped ones are in its config.json):
#   python recipes/export_purifier.py RUN/checkpoint.pt --out src/impure/weights/cifar10 --noise-t I,F --force
# The shipped stretches, their exact commands and the images they saw are listed in recipes/CAMPAIGN.md.
MINUTES="${MINUTES:-150}"
source "$(dirname "$0")/stretch.sh"

first_stretch() {
    impure train "$@"
}

run_stretch configs/cifar10-campaign.toml runs/cifar10-campaign impure/cifar10 50 "$@"
