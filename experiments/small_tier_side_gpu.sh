#!/usr/bin/env bash
# Issue 15's open questions at the small tier, run beside experiments/small_tier_gpu.sh on the
# same GPU once that script's pre-training is cached (it waits for "pre-training done" in the
# driver's log, $WAIT_FOR; without it, it starts at once), each under $DEADLINE_S seconds:
#   width_rule.md      the width rule (lr 1.5e-3) for LoRA, EWC, replay, SEFE and InfLoRA on
#                      toy_dataset, seeds $RULE_SEEDS (experiments/lora_drift_gpu.sh VARIANTS=0)
#   prompt_methods.md  L2P, DualPrompt and CODA-Prompt on small_clip, toy_class_incremental,
#                      seed 0, scored task-agnostic and task-aware, 3 and 28 epochs (one row per
#                      run), and for each task-agnostic run the share of each just-trained
#                      task's images given an older task's class (future_task_predictions.py)
#   ddas_small.md      MoE-Adapters' DDAS errors and routes on small_clip, toy_mtil
#                      (calibrate_ddas.py): does the tiny preset's threshold send the small
#                      tier's test images to zero-shot CLIP?
#
#   OUT=/path WAIT_FOR=/tmp/st/log.txt DEADLINE_S=1100 setsid experiments/small_tier_side_gpu.sh
#   RULE_SEEDS=none ...       # without the width rule
#   CLIP=tiny_clip_micro CLS_STREAM=toy_class_micro MTIL_STREAM=toy_class_micro \
#     BACKBONE=tiny_llava_micro STREAM=toy_micro ALONE=capability_colour GPU_ARGS= EPOCHS=1 \
#     RULE_SEEDS=0 experiments/small_tier_side_gpu.sh                 # CPU smoke test
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/small_tier_side_out}
WORK=${WORK:-/tmp/small_tier_side}
DEADLINE_S=${DEADLINE_S:-1100}
RULE_SEEDS=${RULE_SEEDS:-"0 1 2"}
CLIP=${CLIP:-small_clip}
CLS_STREAM=${CLS_STREAM:-toy_class_incremental}
MTIL_STREAM=${MTIL_STREAM:-toy_mtil}
EPOCHS=${EPOCHS:-3,28}
GPU_ARGS=${GPU_ARGS-trainer=gpu}
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
if [[ -n ${WAIT_FOR:-} ]]; then
  until grep -q "pre-training done" "$WAIT_FOR" 2>/dev/null; do sleep 5; done
  stamp "the driver's pre-training is cached"
fi
left() { echo $(( DEADLINE_S - ($(date +%s) - start) )); }

[[ $RULE_SEEDS != none ]] && OUT=$OUT WORK=$WORK/lora_drift GPU_ARGS=$GPU_ARGS VARIANTS=0 \
  RULE_SEEDS=$RULE_SEEDS DEADLINE_S=$(left) bash experiments/lora_drift_gpu.sh \
  > "$WORK/lora_drift.log" 2>&1 && mv "$OUT/lora_drift.md" "$OUT/width_rule.md" &

n=$(( 6 * $(tr ',' ' ' <<< "$EPOCHS" | wc -w) ))  # 3 methods x 2 scorings x the epochs
launch=()  # the GPU: every run at once on GPU 0; the CPU: Hydra's one at a time
[[ -n $GPU_ARGS ]] && launch=(hydra/launcher=parallel "hydra.launcher.n_jobs=$n"
                              "hydra.launcher.gpus=[$(printf '0,%.0s' $(seq $((n - 1))))0]")
# shellcheck disable=SC2086
timeout -s INT "$(( $(left) - 20 ))" $PY -m mcl.run -m "backbone=$CLIP" "stream=$CLS_STREAM" \
  seed=0 experiment=l2p_tiny,dualprompt_tiny,coda_prompt_tiny stream.task_aware=false,true \
  "method.epochs=choice($EPOCHS)" $GPU_ARGS "${launch[@]}" trainer.progress_bar=false \
  logger=none "hydra.sweep.dir=$WORK/prompt_methods" > "$WORK/prompt_methods.log" 2>&1 &
prompt_pid=$!

$PY experiments/calibrate_ddas.py "backbone=$CLIP" "stream=$MTIL_STREAM" > "$OUT/ddas_small.md" 2> "$WORK/ddas.log"
stamp "calibrate_ddas: exit $?"

wait "$prompt_pid"
stamp "prompt methods: exit $? (124: stopped at the deadline)"
{
  echo "# L2P, DualPrompt, CODA-Prompt on $CLIP, $CLS_STREAM, seed 0, epochs $EPOCHS"
  echo
  $PY experiments/ablation_table.py "$WORK/prompt_methods"
  echo
  echo "Right after training each task, the share of its test images given an older task's class:"
  echo
  # run folders sit at backbone/stream/method/overrides under the sweep folder
  find "$WORK/prompt_methods" -name results.json -printf '%h\n' | sort | while read -r run; do
    grep -q "task_aware: false" "$run/.hydra/config.yaml" || continue
    echo "## $(tr '\n' ' ' < "$run/.hydra/overrides.yaml")"
    echo
    $PY experiments/future_task_predictions.py --just-trained "$run"
    echo
  done
} > "$OUT/prompt_methods.md" 2>> "$WORK/prompt_methods.log"
wait
stamp "done; side tables in $OUT"
ls "$OUT"
