"""`python -m mcl.run`: compose the config, check it, build the pieces, run the stream.

    python -m mcl.run                                   # finetune on toy_domain, tiny_llava
    python -m mcl.run method=lora stream=toy_capability
    python -m mcl.run -m method=finetune,lora seed=0,1  # a sweep, one directory per run
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from mcl.data.label_space import check_family
from mcl.data.task import Stream
from mcl.distributed import init_from_env, is_main
from mcl.eval_policy import EvalConfig
from mcl.io import write_json, write_text
from mcl.loop import LoopConfig, run_stream
from mcl.results import environment, summary_table
from mcl.strategies.base import ContinualStrategy, build_strategy

# Offline unless the user says otherwise: never wait on the Hub for a model mcl already has.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _sweep_group() -> str:
    """Name shared by every run of one sweep (the sweep directory), for grouping in W&B."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return "interactive"
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name
    return "single-runs"


OmegaConf.register_new_resolver("mcl_sweep_group", _sweep_group, replace=True)


def build(node: DictConfig, **kwargs):
    """Hydra's instantiate, re-raising the target's own error (its message says what to fix)
    instead of Hydra's wrapper."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def build_method(cfg: DictConfig) -> ContinualStrategy:
    """The strategy named by `method.name` with the rest of `method` as its arguments."""
    options = OmegaConf.to_container(cfg.method, resolve=True)
    return build_strategy(options.pop("name"), **options)


def check_pair(strategy: ContinualStrategy, backbone_cfg: DictConfig) -> None:
    """Fail before loading any weights if the method cannot run on the backbone."""
    backbone_cls = get_method(backbone_cfg._target_).__self__
    probe = type("Probe", (), {"name": backbone_cfg.name, "family": backbone_cls.family,
                               "capabilities": backbone_cls.capabilities,
                               "part_names": getattr(backbone_cls, "part_names", None)})
    strategy.check_backbone(probe)


def skipped_images(stream: Stream) -> dict[str, dict[str, int]]:
    """{task: {split: samples left out}} for a missing or unreadable image (the tasks'
    `meta["bad_images"]`, filled with stream.skip_bad_images=true); empty when none was."""
    skipped = {t.name: {split: len(paths) for split, paths in t.meta["bad_images"].items()}
               for t in stream.tasks if t.meta.get("bad_images")}
    return skipped if any(n for c in skipped.values() for n in c.values()) else {}


def run(cfg: DictConfig, run_dir: str | Path, loggers: list | None = None) -> dict:
    """Run one backbone x method x stream; every check happens before any long work."""
    run_dir = Path(run_dir)
    strategy = build_method(cfg)
    check_pair(strategy, cfg.backbone)
    evaluation = EvalConfig(**OmegaConf.to_container(cfg.get("evaluation") or {}, resolve=True))
    stream = build(cfg.stream, seed=cfg.seed)
    check_family(get_method(cfg.backbone._target_).__self__.family, cfg.backbone.name,
                 stream.name, stream.tasks)
    loop_cfg = LoopConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    if loggers is None:
        loggers = [build(c) for c in (cfg.get("logger") or {}).values()]
    init_from_env(loop_cfg.accelerator)
    if is_main():
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    backbone = build(cfg.backbone, _convert_="all")
    strategy.setup(backbone)
    print(strategy.describe())
    print(f"stream {stream.name}: {len(stream.tasks)} tasks ({', '.join(stream.task_names)})")
    meta = {"method": cfg.method.name, "stream": stream.name, "backbone": cfg.backbone.name,
            "seed": cfg.seed, "config": OmegaConf.to_container(cfg, resolve=True),
            **environment()}
    skipped = skipped_images(stream)
    if skipped:
        meta["skipped_images"] = skipped
        print(f"skipped samples with a missing or unreadable image: {skipped}")
    results = run_stream(strategy, stream, run_dir, loop_cfg, seed=cfg.seed, loggers=loggers,
                         resume=cfg.resume, meta=meta, evaluation=evaluation)
    if is_main():
        from mcl.loggers import log_final

        log_final(loggers, results, run_dir / "matrix.png")
        print(summary_table(results))
        print(f"outputs in {run_dir}")
    return results


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, run_dir)
    except Exception as err:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # One failed job must not end the sweep: record why, and let the next job start.
        # `python -m mcl.report` lists the run as failed with this message.
        write_json(run_dir / "failed.json", {"error": f"{type(err).__name__}: {err}",
                                             "traceback": traceback.format_exc()})
        print(f"run failed, the sweep goes on: {type(err).__name__}: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
