#!/usr/bin/env bash
# The small tier's comparison tables on one GPU (issue 15), within ~9 minutes on an H200:
# pre-trains small_llava, small_clip and small_vit (in parallel), measures Fwd-Prompt's subspaces
# on the pre-trained small_llava, then runs the instruction comparison (compare_toy.py --tier
# small) and the classification comparison (compare_classification.py --tier small) at once,
# several jobs sharing the GPU (hydra.launcher.gpus=[0,0,...]), plus two ablation sweeps
# (Fwd-Prompt thresholds, CoDyRA tiny vs official-length preset) on toy_dataset, 22 jobs at once. Markdown
# tables go to $OUT (default ./small_tier_out); runs go to $WORK (default /tmp/small_tier).
#
#   OUT=/path experiments/small_tier_gpu.sh                 # on the GPU machine, seeds 0
#   SEEDS="0 1 2" experiments/small_tier_gpu.sh             # more seeds: finished runs reused
#   ABLATIONS=0 JOBS=11 SEEDS="0 1 2" experiments/small_tier_gpu.sh   # the tables alone
#   TOY_JOBS=15 CLS_JOBS=9 ...  # jobs per family where their work differs (default: $JOBS each)
#   experiments/small_tier_gpu.sh --dry                     # CPU smoke test: micro backbones,
#                                                           # micro streams, a few methods
#   CHECK_DETERMINISM=1 ...   # also pre-train each backbone a second time (in parallel, into
#                             # $WORK/second_cache) and compare the weights' digests
#   ONLY_MISSING=1 RESTORE=runs.tar.gz ...  # sweep only the methods x seeds that still have
#                             # a run to do (experiments/missing_runs.py): a finished run costs
#                             # a process, its imports, stream and backbone before it is kept
#   RESTORE=runs.tar.gz ...   # first unpack an earlier machine's finished runs into $WORK: those
#                             # whose weights this machine's pre-training reproduced (the same
#                             # digest: deterministic kernels) count as done; the rest are left out
# At the end $OUT also holds runs.tar.gz (the finished runs, for RESTORE; experiments/
# archive_runs.py), runs.json (every run's matrix) and timings.md (where the time went).
# Each sweep is stopped (SIGINT, so its jobs are stopped too) at $BUDGET_S seconds (default 390),
# or, with $DEADLINE_S set, when the script has run DEADLINE_S seconds in all (for a device call
# of fixed length: pre-training time varies), and its report written from the runs that
# finished; the status column says which did not. A stopped run resumes from its step
# checkpoint when the script runs again with the same $WORK.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/small_tier_out}
WORK=${WORK:-/tmp/small_tier}
SEEDS=${SEEDS:-0}
BUDGET_S=${BUDGET_S:-390}
ABLATIONS=${ABLATIONS:-1}  # 0: the two comparisons alone (e.g. a later call finishing the tables)
mkdir -p "$OUT" "$WORK"
PY=${PYTHON:-python}
# This checkout's mcl and conf/, also for the scripts run from experiments/ (whose own folder,
# not the checkout, is first on their path).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# The launcher's GPU of each of $1 job slots: all on GPU 0 (the sweeps share one GPU).
gpus() { local zeros; zeros=$(printf '0,%.0s' $(seq "$1")); echo "hydra.launcher.gpus=[${zeros%,}]"; }
if [[ "${1:-}" == "--dry" ]]; then
  LLAVA=tiny_llava_micro CLIP=tiny_clip_micro VIT=tiny_vit_micro
  TOY_STREAMS="toy_micro" CLS_STREAMS="toy_class_micro"
  TOY_METHODS="zero_shot finetune rank_selective_lora fwd_prompt"
  CLS_METHODS="zero_shot lora rank_selective_lora"
  JOBS=2 GPU_ARGS=() ABL_STREAM="stream=toy_micro"
  # A smoke test of the pipeline, numbers meaningless: one epoch in the ablation sweeps.
  EXTRA=(method.epochs=1)
else
  LLAVA=small_llava CLIP=small_clip VIT=small_vit
  TOY_STREAMS="toy_domain toy_capability toy_dataset"
  CLS_STREAMS="toy_class_incremental toy_domain_incremental toy_mtil"
  # Every registered method of each family (compare_toy.py's and compare_classification.py's),
  # unless $TOY_METHODS / $CLS_METHODS name fewer (experiments/small_tier_phases.sh). Slowest
  # first (median run times, experiments/results/small_tier_h200_s9_timings.md), so that the
  # longest runs start first and the sweep's end does not wait on a few of them.
  TOY_METHODS=${TOY_METHODS:-"rank_selective_lora inflora joint hide_llava ewc lwf o_lora moe_lora
    replay lora continual_llava fwd_prompt finetune modal_prompt sefe wise_ft zero_shot"}
  CLS_METHODS=${CLS_METHODS:-"rank_selective_lora moe_adapters prompt_fusion inflora moe_lora
    o_lora ewc lwf replay zscl joint lora wise_ft finetune l2p coda_prompt dualprompt zero_shot"}
  JOBS=${JOBS:-8}
  GPU_ARGS=(trainer=gpu "$(gpus "$JOBS")") ABL_STREAM="stream=toy_dataset"
  EXTRA=()
  # 22 jobs share 16 cores: one CPU thread each (the GPU does the work). A fast tokenizer starts
  # a Rayon pool of one thread per core in every process (16 here); the toy prompts are a few
  # words, so the sweep's 24 processes need none of it (experiments/results/small_tier_h200.md,
  # "The CPU load of the sweep").
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
fi
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

stamp "pre-training $LLAVA, $CLIP, $VIT (cached by config hash; skipped when cached)"
for b in "$LLAVA" "$CLIP" "$VIT"; do
  $PY -m mcl.pretrain "backbone=$b" "hydra.run.dir=$WORK/pretrain_$b" > "$WORK/pretrain_$b.log" 2>&1 &
  if [[ ${CHECK_DETERMINISM:-0} == 1 ]]; then
    MCL_CACHE="$WORK/second_cache" $PY -m mcl.pretrain "backbone=$b" \
      "hydra.run.dir=$WORK/pretrain2_$b" > "$WORK/pretrain2_$b.log" 2>&1 &
  fi
done
wait
for b in "$LLAVA" "$CLIP" "$VIT"; do
  tail -n 2 "$WORK/pretrain_$b.log" | tr '\r' '\n' | tail -n 2
done
{
  echo "# Small tier: pre-training"
  echo
  for b in "$LLAVA" "$CLIP" "$VIT"; do
    f="$(tail -n 1 "$WORK/pretrain_$b.log")/pretrain.json"  # mcl.pretrain prints the cache dir
    echo "- $b: $( [[ -f "$f" ]] && $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(', '.join(f'{k} {v:.3f}' for k, v in r.items() if isinstance(v, float)), '|', r['device'])" "$f")"
    echo "  weights sha256 $(cat "$(dirname "$f")/weights.sha256" 2>/dev/null)"
    if [[ ${CHECK_DETERMINISM:-0} == 1 ]]; then
      g="$(tail -n 1 "$WORK/pretrain2_$b.log")/weights.sha256"
      echo "  second pre-training: sha256 $(cat "$g" 2>/dev/null)" \
        "($(cmp -s "$(dirname "$f")/weights.sha256" "$g" && echo identical || echo DIFFERENT))"
    fi
  done
} > "$OUT/pretrain.md"
stamp "pre-training done"
cat "$OUT/pretrain.md"
if [[ -n "${RESTORE:-}" ]]; then  # finished runs only; a run that is here already stays
  stamp "$($PY experiments/archive_runs.py --restore "$RESTORE" "$WORK")"
  # RERUN="l2p dualprompt": methods whose settings changed since the archive. mcl.run would
  # refuse their restored runs (other settings), so they go, and the sweep runs them again.
  for m in ${RERUN:-}; do
    rm -rf "$WORK"/compare_toy_small/*/*/"$m" "$WORK"/compare_classification_small/*/*/"$m"
    stamp "removed the restored runs of $m (RERUN)"
  done
fi

TOY_SEEDS=$SEEDS CLS_SEEDS=$SEEDS
if [[ ${ONLY_MISSING:-0} == 1 ]]; then  # sweep only the methods x seeds with a run left to do
  left_to_run() {  # sweep folder, backbone, methods, streams -> "methods: ..." / "seeds: ..."
    # shellcheck disable=SC2086
    $PY experiments/missing_runs.py "$WORK/$1" --backbone "$2" --methods $3 --streams $4 \
      --seeds $SEEDS 2>> "$WORK/missing_runs.log"
  }
  toy=$(left_to_run compare_toy_small "$LLAVA" "$TOY_METHODS" "$TOY_STREAMS")
  cls=$(left_to_run compare_classification_small "$CLIP" "$CLS_METHODS" "$CLS_STREAMS")
  TOY_METHODS=$(sed -n 's/^methods: *//p' <<< "$toy") TOY_SEEDS=$(sed -n 's/^seeds: *//p' <<< "$toy")
  CLS_METHODS=$(sed -n 's/^methods: *//p' <<< "$cls") CLS_SEEDS=$(sed -n 's/^seeds: *//p' <<< "$cls")
  stamp "left to run: instruction ${TOY_METHODS:-none} (seeds ${TOY_SEEDS:-none}); classification ${CLS_METHODS:-none} (seeds ${CLS_SEEDS:-none})"
fi

if [[ $ABLATIONS == 1 ]]; then
  stamp "Fwd-Prompt subspaces on the pre-trained $LLAVA"
  $PY experiments/ablate_fwd_prompt.py "backbone=$LLAVA" "$ABL_STREAM" > "$OUT/ablate_fwd_prompt_subspaces.md" 2>"$WORK/ablate_fwd_prompt.log"
  cat "$OUT/ablate_fwd_prompt_subspaces.md"
fi

sweep() {  # name, command...: run under the time budget, then write its report (with no
  # command, the report alone: ONLY_MISSING=1 and nothing of that family left to run)
  local name=$1; shift
  if (( $# )); then
    timeout -s INT "$BUDGET_S" "$@" > "$WORK/$name.log" 2>&1
    stamp "$name: exit $? (124: stopped at the budget)"
  fi
  if [[ $name == ablate_* ]]; then  # one row per run: the variants are not seeds
    $PY experiments/ablation_table.py "$WORK/$name" > "$OUT/$name.md"
  else
    $PY -m mcl.report "$WORK/$name" >> "$WORK/$name.log" 2>&1
    cp "$WORK/$name/report.md" "$OUT/$name.md" 2>/dev/null || echo "no report for $name" >&2
  fi
}
if [[ -n "${DEADLINE_S:-}" ]]; then  # what is left of the call, less time for the reports
  BUDGET_S=$(( DEADLINE_S - ($(date +%s) - start) - 45 ))
  (( BUDGET_S > 30 )) || BUDGET_S=30
fi
TOY_JOBS=${TOY_JOBS:-$JOBS} CLS_JOBS=${CLS_JOBS:-$JOBS}
stamp "comparisons and ablations, $TOY_JOBS + $CLS_JOBS jobs, stopped after $BUDGET_S s"
toy_sweep=() cls_sweep=()
# shellcheck disable=SC2206
[[ -n $TOY_METHODS ]] && toy_sweep=($PY experiments/compare_toy.py --tier small
  --backbone "$LLAVA" --methods $TOY_METHODS --streams $TOY_STREAMS --seeds $TOY_SEEDS
  --jobs "$TOY_JOBS" --out "$WORK/compare_toy_small"
  "${GPU_ARGS[@]/hydra.launcher.gpus=*/$(gpus "$TOY_JOBS")}")
# shellcheck disable=SC2206
[[ -n $CLS_METHODS ]] && cls_sweep=($PY experiments/compare_classification.py --tier small
  --backbone "$CLIP" --methods $CLS_METHODS --streams $CLS_STREAMS --seeds $CLS_SEEDS
  --jobs "$CLS_JOBS" --out "$WORK/compare_classification_small"
  "${GPU_ARGS[@]/hydra.launcher.gpus=*/$(gpus "$CLS_JOBS")}")
sweep compare_toy_small "${toy_sweep[@]}" &
sweep compare_classification_small "${cls_sweep[@]}" &
# Ablations (a) and (b) at the small tier, toy_dataset, seed 0: Fwd-Prompt with fewer protected
# directions / the whole embedding span allowed; CoDyRA's tiny preset (~96 steps, scaled kappa)
# against the official 500-iteration one (the comparison above runs the latter).
[[ $ABLATIONS == 1 ]] && sweep ablate_small $PY -m mcl.run -m "backbone=$LLAVA" "$ABL_STREAM" seed=0 \
  experiment=fwd_prompt_tiny method.task_threshold=0.97,0.5 method.pretrained_threshold=0.97,1.0 \
  trainer.progress_bar=false logger=none "hydra.sweep.dir=$WORK/ablate_small" \
  hydra/launcher=parallel hydra.launcher.n_jobs=4 "${GPU_ARGS[@]/hydra.launcher.gpus=*/$(gpus 4)}" "${EXTRA[@]}" &
[[ $ABLATIONS == 1 ]] && sweep ablate_codyra_small $PY -m mcl.run -m "backbone=$LLAVA" "$ABL_STREAM" seed=0 \
  experiment=rank_selective_lora_tiny,rank_selective_lora_small \
  trainer.progress_bar=false logger=none "hydra.sweep.dir=$WORK/ablate_codyra_small" \
  hydra/launcher=parallel hydra.launcher.n_jobs=2 "${GPU_ARGS[@]/hydra.launcher.gpus=*/$(gpus 2)}" "${EXTRA[@]}" &
wait
grep -r --include=run.log "ranks into" "$WORK/ablate_codyra_small" 2>/dev/null > "$OUT/ablate_codyra_merged_ranks.txt"
{ echo "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo CPU), $(nproc --all) cores"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)"; echo "seeds: $SEEDS; total $(( $(date +%s) - start )) s"; } > "$OUT/machine.txt"
$PY experiments/archive_runs.py "$WORK" "$OUT/runs.tar.gz"
$PY experiments/collect_matrices.py "$WORK" "$OUT/runs.json"
for name in compare_toy_small compare_classification_small; do
  [[ -d "$WORK/$name" ]] && { echo "## $name"; echo; $PY experiments/run_timings.py "$WORK/$name"; echo; }
done > "$OUT/timings.md"
stamp "done; tables in $OUT"
ls "$OUT"
