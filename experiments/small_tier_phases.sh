#!/usr/bin/env bash
# The small-tier sweep in order of what the tables need most, within one deadline: (1) every
# method's seed 0, (2) seeds 1 and 2 of the four seed methods and the baselines their papers'
# claims compare against, (3) seeds 1 and 2 of the rest. Each phase is one run of
# experiments/small_tier_gpu.sh on the same $WORK (finished runs count as done, a stopped run
# resumes), so the reports in $OUT always cover every finished run.
#
#   OUT=... WORK=... DEADLINE_S=1500 RESTORE=runs.tar.gz experiments/small_tier_phases.sh
#
# Meant to be started with setsid on the device machine, so that it runs on across several
# device calls (each under 10 minutes) while the machine stays held; each call can take an
# interim `experiments/archive_runs.py $WORK runs.tar.gz` of what has finished.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${DEADLINE_S:?set DEADLINE_S, the seconds this driver may run in all}"
end=$(( $(date +%s) + DEADLINE_S ))
# Fwd-Prompt, Continual LLaVA and CoDyRA (instruction), PromptFusion and CoDyRA (classification),
# with what their claims are stated against: sequential fine-tuning and LoRA; L2P, DualPrompt
# and CODA-Prompt (PromptFusion); ZSCL (CoDyRA on MTIL). zero_shot is the Transfer reference.
# Slowest first, as small_tier_gpu.sh orders its lists.
SEED_TOY="rank_selective_lora lora continual_llava fwd_prompt finetune zero_shot"
SEED_CLS="rank_selective_lora prompt_fusion zscl lora finetune l2p coda_prompt dualprompt zero_shot"
phase() {  # seeds, toy methods, classification methods; then small_tier_gpu.sh's arguments
  local seeds=$1 toy=$2 cls=$3; shift 3
  local left=$(( end - $(date +%s) ))
  (( left > 120 )) || { echo "phase \"$seeds\" skipped: ${left} s left"; return; }
  echo "== phase: seeds $seeds, ${left} s left"
  SEEDS=$seeds TOY_METHODS=$toy CLS_METHODS=$cls DEADLINE_S=$left ABLATIONS=0 \
    bash experiments/small_tier_gpu.sh "$@"
  RESTORE=  # only the first phase unpacks the earlier machine's runs
}
phase "0" "" "" "$@"  # every registered method (the script's defaults)
phase "0 1 2" "$SEED_TOY" "$SEED_CLS" "$@"
phase "0 1 2" "" "" "$@"
echo "== all phases done or out of time"
