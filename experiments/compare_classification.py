"""Methods on the four toy classification streams: mean ± std over seeds of Last, Forgetting, BWT,
FWT and Transfer (the CLIP/ViT family: class-incremental, domain-incremental, MTIL, X-TAIL).

    python experiments/compare_classification.py --seeds 0 1 2 --jobs 8 trainer=gpu
    python experiments/compare_classification.py --methods zero_shot finetune lora \\
        stream.train_size=50 stream.test_size=40                   # a quick look on CPU

Runs a Hydra multirun of `mcl.run` (backbone tiny_clip unless --backbone) into --out (default
multirun/compare_classification; with --jobs > 1 through hydra/launcher=parallel; finished runs
are reused, as a re-run resumes), then `python -m mcl.report` on it: report.md, report.csv and
plots/ beside the runs. Each method runs with its toy classification preset, the first of
`experiment=<method>_clip`, `experiment=<method>_tiny` that exists in conf/experiment/, else with
`method=<method>`; `--tier small` (GPU: experiments/small_tier_gpu.sh) takes backbone small_clip
and tries `<method>_clip_small`, `<method>_small` first; a method that is not registered (or has
no config) is skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep import ROOT, TIERS, method_choices, pretrain_once, sweep_and_report, tier_presets

from mcl.strategies import STRATEGIES

# CoDyRA's CLIP baselines (ZSCL, MoE-Adapters, WiSE-FT, InfLoRA) beside the prompt methods and the
# MCIT baselines that also run on CLIP / ViT.
METHODS = ["prompt_fusion", "rank_selective_lora", "zscl", "moe_adapters", "wise_ft", "inflora",
           "l2p", "dualprompt", "coda_prompt", "moe_lora", "replay", "o_lora", "ewc", "lwf",
           "finetune", "lora", "joint", "zero_shot"]
# toy_xtail: toy_mtil's tasks scored among all domains' classes, no task id (CoDyRA's X-TAIL).
STREAMS = ["toy_class_incremental", "toy_domain_incremental", "toy_mtil", "toy_xtail"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--streams", nargs="+", default=STREAMS)
    parser.add_argument("--tier", choices=TIERS, default="tiny",
                        help="backbone tier: tiny_clip (CPU default) or small_clip (GPU)")
    parser.add_argument("--backbone", default=None, help="default: <tier>_clip")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (parallel launcher)")
    parser.add_argument("--out", type=Path, default=ROOT / "multirun" / "compare_classification")
    parser.add_argument("overrides", nargs="*", help="extra mcl.run overrides")
    args = parser.parse_args()
    args.backbone = args.backbone or f"{args.tier}_clip"
    configs = []
    for method in args.methods:
        if method not in STRATEGIES or not (ROOT / "conf" / "method" / f"{method}.yaml").exists():
            print(f"skipping {method}: no registered strategy or conf/method/{method}.yaml in "
                  "this checkout", file=sys.stderr)
            continue
        configs.append(method)
    if not configs:
        sys.exit("none of the requested methods is available; registered: "
                 + ", ".join(sorted(STRATEGIES)))
    pretrain_once(args.backbone)
    sys.exit(sweep_and_report(method_choices(configs, tier_presets(args.tier, ("_clip", "_tiny"))),
                              [f"backbone={args.backbone}", f"stream={','.join(args.streams)}"],
                              args.seeds, args.out, args.jobs, args.overrides))


if __name__ == "__main__":
    main()
