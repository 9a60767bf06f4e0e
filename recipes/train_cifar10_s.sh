#!/usr/bin/env bash
# Reproduce the bundled purifier "impure/cifar10-s" (src/impure/weights/cifar10-s) on a CPU, from the
# repository root, with ../shared beside it:
#   bash recipes/train_cifar10_s.sh
# Both stages checkpoint as they go; rerunning this script after an interruption resumes them.
# Set OMP_NUM_THREADS to choose the CPU threads (the shipped run used 1 thread per process).
set -euo pipefail
resume_flag() { [[ -f "$1/checkpoint.pt" ]] && echo --resume || true; }

impure train configs/cifar10-s-cpu-pretrain.toml $(resume_flag runs/cifar10-s-cpu-pretrain)
impure train configs/cifar10-s-cpu-finetune.toml $(resume_flag runs/cifar10-s-cpu-finetune)
python recipes/export_purifier.py runs/cifar10-s-cpu-finetune/model --out src/impure/weights/cifar10-s \
    --strength 0.1 --force  # the evaluation strength chosen on the frontier
