#!/usr/bin/env bash
# Issue 15, Fwd-Prompt's collapse on toy_dataset (accuracy right after training tasks 2-4 is 0
# at both tiers, whatever the thresholds): is it the projection? One device call: pre-trains
# small_llava, then runs Fwd-Prompt with each of its projections (method.projection = full, the
# method; old_tasks, PGP's residual space alone; none, a plain L2P prompt pool) and LoRA, on
# toy_dataset, seed 0, four jobs sharing the GPU; one row per run (ablation_table.py) to $OUT.
#   OUT=/path DEADLINE_S=400 experiments/fwd_prompt_projection_gpu.sh
#   BACKBONE=tiny_llava_micro STREAM=toy_micro GPU_ARGS= experiments/fwd_prompt_projection_gpu.sh  # CPU smoke
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/fwd_prompt_projection_out}
WORK=${WORK:-/tmp/fwd_prompt_projection}
DEADLINE_S=${DEADLINE_S:-400}
BACKBONE=${BACKBONE:-small_llava}
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
GPU_ARGS=${GPU_ARGS-trainer=gpu}
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
$PY -m mcl.pretrain "backbone=$BACKBONE" "hydra.run.dir=$WORK/pretrain" > "$WORK/pretrain.log" 2>&1
echo "[$(( $(date +%s) - start )) s] pre-trained: $(tail -n 2 "$WORK/pretrain.log" | head -n 1)"
left=$(( DEADLINE_S - ($(date +%s) - start) - 20 ))
common=("backbone=$BACKBONE" "stream=${STREAM:-toy_dataset}" seed=0 trainer.progress_bar=false logger=none)
# shellcheck disable=SC2086
timeout -s INT "$left" $PY -m mcl.run -m "${common[@]}" experiment=fwd_prompt_tiny \
  method.projection=full,old_tasks,none $GPU_ARGS "hydra.sweep.dir=$WORK/runs" \
  hydra/launcher=parallel hydra.launcher.n_jobs=3 > "$WORK/fwd_prompt.log" 2>&1 &
# shellcheck disable=SC2086
timeout -s INT "$left" $PY -m mcl.run "${common[@]}" method=lora $GPU_ARGS \
  "hydra.run.dir=$WORK/runs/lora" > "$WORK/lora.log" 2>&1 &
wait
echo "[$(( $(date +%s) - start )) s] runs stopped or done"
$PY experiments/ablation_table.py "$WORK/runs" | tee "$OUT/fwd_prompt_projection.md"
