#!/usr/bin/env bash
# Issue 15: why Fwd-Prompt scores 0 right after training tasks 2-4 of toy_dataset. Two sweeps,
# seed 0, one row per run (ablation_table.py):
# (a) its projections on the stream: method.projection = full (the method), old_tasks (PGP's
#     residual space alone), none (a plain L2P prompt pool, nothing projected);
# (b) a plain prompt pool on each of those tasks alone (a one-task stream), with the tiny recipe
#     and with 3x its epochs: can prompts on this frozen LM learn the task at all?
#   BACKBONE=tiny_llava experiments/fwd_prompt_diagnosis.sh        # the CPU tier (deterministic)
#   BACKBONE=small_llava EXTRA=trainer=gpu experiments/fwd_prompt_diagnosis.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BACKBONE=${BACKBONE:-tiny_llava}
WORK=${WORK:-/tmp/fwd_prompt_diagnosis}
JOBS=${JOBS:-2}
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=("backbone=$BACKBONE" stream=toy_dataset seed=0 experiment=fwd_prompt_tiny
        trainer.progress_bar=false logger=none hydra/launcher=parallel "hydra.launcher.n_jobs=$JOBS")
# shellcheck disable=SC2086
$PY -m mcl.run -m "${common[@]}" method.projection=full,old_tasks,none ${EXTRA:-} \
  "hydra.sweep.dir=$WORK/projection" > "$WORK.projection.log" 2>&1
# shellcheck disable=SC2086
$PY -m mcl.run -m "${common[@]}" method.projection=none \
  'stream.tasks=[dataset_multiple_choice],[dataset_yes_no],[dataset_caption]' \
  method.epochs=3,9 ${EXTRA:-} "hydra.sweep.dir=$WORK/alone" > "$WORK.alone.log" 2>&1
for sweep in projection alone; do
  echo "## $sweep"; $PY experiments/ablation_table.py "$WORK/$sweep"
done
