#!/usr/bin/env bash
# The equal-time pilot runs that chose the bundled purifier's design (2026-11-25, 2-core CPU, 1 thread each,
# two or three runs side by side). Each trains from scratch with configs/pilots/pretrain.toml (constant
# learning rate) for a wall-clock budget; rank them with benchmarks/frontier.py on their checkpoints'
# models (export a checkpoint with Purifier.load_state_dict + save_pretrained, or let a run finish).
#   bash recipes/pilots.sh
set -euo pipefail
export OMP_NUM_THREADS=1
MILD='train_image_noise_t: [0, 399], train_feature_noise_t: [0, 599], image_noise_t: 200, feature_noise_t: 300'
P2='patch_size: 2, encoder_width: 128, encoder_depth: 4, encoder_heads: 4, decoder_width: 128, decoder_depth: 2,
    decoder_heads: 4, fusion_taps: [0, 2]'

# Patch 4 (192-wide 6-block encoder) vs patch 2 (128-wide 4-block encoder), noise masks, 9 minutes each.
impure train configs/pilots/pretrain.toml --set output_dir=runs/pilots/p4-noise \
    --set "model.overrides={$MILD}" --time-limit 9 &
impure train configs/pilots/pretrain.toml --set output_dir=runs/pilots/p2-noise \
    --set "model.overrides={$P2, $MILD}" --time-limit 9 &
wait
# Token masks (patch 4), 8 minutes; the patch-2 pilot continued for 8 more (it became stage 1 of the recipe).
impure train configs/pilots/pretrain.toml --set output_dir=runs/pilots/p4-token \
    --set "model.overrides={mask_mode: token}" --time-limit 8 &
impure train configs/pilots/pretrain.toml --set output_dir=runs/pilots/p2-noise \
    --set "model.overrides={$P2, $MILD}" --resume --time-limit 8 &
wait
# The paper's fine-tuning loss alone (no classifier-guided term), beside the recipe's stage 2; the shipped
# comparison stopped it at step 280 of 800.
impure train configs/cifar10-s-cpu-finetune.toml --set output_dir=runs/ft-paper --set loss.classifier_weight=0
