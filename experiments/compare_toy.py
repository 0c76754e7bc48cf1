"""Methods on the three toy streams: mean ± std over seeds of the standard metrics.

    python experiments/compare_toy.py --methods zero_shot finetune lora joint   # the baselines
    python experiments/compare_toy.py --seeds 0 1 2                             # every method
    python experiments/compare_toy.py --seeds 0 1 2 --jobs 8 trainer=gpu        # in parallel

Runs a Hydra multirun of `mcl.run` into --out (default multirun/compare_toy; with --jobs > 1
through hydra/launcher=parallel; finished runs are reused, as a re-run resumes), then
`python -m mcl.report` on it: report.md, report.csv and plots/ beside the runs. A method with a
tiny scale preset (conf/experiment/<method>_tiny.yaml) runs with it. `--tier small` runs the
small tier on a GPU (backbone small_llava; a method's `_small` preset first, else its `_tiny`
one): experiments/small_tier_gpu.sh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep import ROOT, TIERS, method_choices, pretrain_once, sweep_and_report, tier_presets

SEED_METHODS = ["fwd_prompt", "continual_llava", "rank_selective_lora"]
# The MCIT baselines (issue 12), each with its conf/experiment/<name>_tiny.yaml.
BASELINES = ["moe_lora", "replay", "o_lora", "ewc", "lwf", "hide_llava", "modal_prompt", "sefe"]
# CoDyRA's CLIP baselines whose mechanism also applies to instruction tuning (issue 13).
CLIP_BASELINES = ["inflora", "wise_ft"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+",
                        default=["zero_shot", "finetune", "lora", "joint", *SEED_METHODS,
                                 *BASELINES, *CLIP_BASELINES])
    parser.add_argument("--streams", nargs="+",
                        default=["toy_domain", "toy_capability", "toy_dataset"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (parallel launcher)")
    parser.add_argument("--tier", choices=TIERS, default="tiny",
                        help="backbone tier: tiny_llava (CPU default) or small_llava (GPU)")
    parser.add_argument("--backbone", default=None, help="default: <tier>_llava")
    parser.add_argument("--out", type=Path, default=ROOT / "multirun" / "compare_toy")
    parser.add_argument("overrides", nargs="*", help="extra mcl.run overrides")
    args = parser.parse_args()
    # The tiny tier keeps its runs' names (no backbone override) so old sweeps resume as done.
    backbone = args.backbone or (None if args.tier == "tiny" else f"{args.tier}_llava")
    pretrain_once(backbone or "tiny_llava")
    sys.exit(sweep_and_report(method_choices(args.methods, tier_presets(args.tier, ("_tiny",))),
                              [*([f"backbone={backbone}"] if backbone else []),
                               f"stream={','.join(args.streams)}"],
                              args.seeds, args.out, args.jobs, args.overrides))


if __name__ == "__main__":
    main()
