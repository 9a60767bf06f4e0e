# Shared by the stretch scripts (recipes/train_cifar10.sh, recipes/train_cifar10_robust.sh): source it, define
# `first_stretch` (what the very first stretch runs), then call
#   run_stretch CONFIG RUN_DIR BUNDLED_NAME WARMUP_STEPS [impure train options...]
# One stretch stops (checkpointed) after $MINUTES minutes and may be cut off at any moment before. It
# continues the run:
#   - from the newest of RUN_DIR and RUN_DIR-<date> that holds a checkpoint.pt (exact resume, with the
#     config saved in that folder);
#   - else, on a machine without the run folder, from the last committed weights of BUNDLED_NAME (the
#     campaign's durable checkpoint, src/impure/weights/...) in a new run folder RUN_DIR-<date>, with a
#     warm-up of WARMUP_STEPS;
#   - else with `first_stretch CONFIG [options...]`.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

run_stretch() {
    local config=$1 run=$2 bundled=$3 warmup=$4
    shift 4
    local folder latest=""
    for folder in $(ls -dt "$run" "$run"-* 2>/dev/null); do
        if [[ -f "$folder/checkpoint.pt" ]]; then
            latest=$folder
            break
        fi
    done
    if [[ -n "$latest" ]]; then
        impure train "$latest/train_config.json" --resume --time-limit "$MINUTES" "$@"
    elif [[ -f "src/impure/weights/${bundled#impure/}/model.safetensors" ]]; then
        impure train "$config" --set "model.init=$bundled" --set "optim.warmup_steps=$warmup" \
            --set "output_dir=$run-$(date +%Y%m%d-%H%M)" --time-limit "$MINUTES" "$@"
    else
        first_stretch "$config" --time-limit "$MINUTES" "$@"
    fi
}
