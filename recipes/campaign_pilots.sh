#!/usr/bin/env bash
# The pilots that ranked changes to the impure/cifar10 campaign recipe (2026-12-02, 2-core CPU, 1 thread
# each, beside the campaign's stretch 4). Each pilot continues the committed impure/cifar10 weights (those of
# commit 84f4a8c, stretch 3's end: check them out to reproduce) as a stretch does (50-step warm-up, a fresh
# EMA, seed 0, hence the same batches) and changes one thing; the baseline, the recipe unchanged, is stretch
# 4's first 400 steps. All are judged on ResNet-56 (never used in training) on the selection split, test_dev
# 0-249, with six grey-box attacks; the results and logs are in benchmarks/results/campaign-cifar10/pilots/,
# the table in recipes/CAMPAIGN.md.
#   bash recipes/campaign_pilots.sh        (from the repository root, with ../shared beside it)
set -euo pipefail
export OMP_NUM_THREADS=1
STEPS=400
pilot() {  # NAME [impure train options...]
    local name=$1
    shift
    impure train configs/cifar10-campaign.toml --set model.init=impure/cifar10 --set optim.warmup_steps=50 \
        --set optim.steps=$STEPS --set output_dir=runs/pilot-$name "$@"
    python recipes/export_purifier.py runs/pilot-$name/checkpoint.pt \
        --out runs/pilot-$name/export --noise-t 40,60 --force
}

# The baseline: the campaign recipe unchanged (stretch 4's first 400 steps).
pilot baseline
# Training noise narrowed from t 0-399 / 0-599 to 0-199 / 0-299 (the shipped strength is t 40/60).
python - <<'EOF'
from impure import Purifier
purifier = Purifier.from_pretrained("impure/cifar10")
purifier.set_training_noise((0, 199), (0, 299))
purifier.save_pretrained("runs/init-cifar10-narrow")
EOF
pilot narrow-noise --set model.init=runs/init-cifar10-narrow
# M-DI²-FGSM-5 added to the training attacks (PGD-5, FGSM): the transfer attacks the purifier does worst on.
pilot attack-mix --set 'adversarial.attacks=[{name: PGD, eps: 8/255, alpha: 2/255, steps: 5},
    {name: FGSM, eps: 8/255}, {name: DIFGSM, eps: 8/255, alpha: 2/255, steps: 5, decay: 1.0}]'
# Three times the classifier-guided weight (0.05 -> 0.15).
pilot ce-0.15 --set loss.classifier_weight=0.15

python benchmarks/robustness.py --start 0 --limit 250 --classifiers cifar_resnet56 --threat grey-box \
    --attacks fgsm,pgd,mifgsm,difgsm,mdi2fgsm,apgd-dlr --defences none \
    --purifier runs/pilot-baseline/export --label "campaign recipe, step $STEPS" \
    --purifier runs/pilot-narrow-noise/export --label "training noise t 0-199/0-299, step $STEPS" \
    --purifier runs/pilot-attack-mix/export --label "+ M-DI2-FGSM-5 in training, step $STEPS" \
    --purifier runs/pilot-ce-0.15/export --label "classifier weight 0.15, step $STEPS" \
    --out benchmarks/results/campaign-cifar10/pilots
