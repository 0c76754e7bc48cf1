"""`python -m mcl.run`: compose the config, check it, build the pieces, run the stream.

    python -m mcl.run                                   # finetune on toy_domain, tiny_llava
    python -m mcl.run method=lora stream=toy_capability
    python -m mcl.run -m method=finetune,lora seed=0,1  # a sweep, one directory per run
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from mcl.data.task import Stream
    from mcl.strategies.base import ContinualStrategy

# torch, Lightning and transformers are imported where a run needs them, not here: `--help`, a
# composed config and a bad command line answer in seconds.

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
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def build_method(cfg: DictConfig) -> ContinualStrategy:
    """The strategy named by `method.name` with the rest of `method` as its arguments."""
    from mcl.strategies.base import build_strategy

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
    from mcl.data.label_space import check_family
    from mcl.data.vocabulary import check_vocabulary
    from mcl.distributed import init_from_env, is_main
    from mcl.io import write_text
    from mcl.loop import LoopConfig, run_stream
    from mcl.results import environment, summary_table

    run_dir = Path(run_dir)
    strategy = build_method(cfg)
    check_pair(strategy, cfg.backbone)
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
    check_vocabulary(backbone, cfg.backbone.name, stream, cfg.get("max_unknown_words"))
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
                         resume=cfg.resume, meta=meta)
    if is_main():
        from mcl.loggers import log_final

        log_final(loggers, results, run_dir / "matrix.png")
        print(summary_table(results))
        print(f"outputs in {run_dir}")
    return results


def _config_dir() -> str:
    """conf/ beside the package in a checkout (and an editable install), mcl/conf in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"mcl's configs are missing: neither {here / 'conf'} nor "
                            f"{here.parent / 'conf'} holds config.yaml; reinstall mcl")


CONFIG_DIR = _config_dir()
_job_started = False


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    global _job_started
    _job_started = True
    from mcl.cli import run_job
    from mcl.config_schema import validate

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)

    def checked_run() -> None:
        validate(cfg)
        run(cfg, run_dir)

    run_job(checked_run, run_dir, multirun=hydra_cfg.mode == RunMode.MULTIRUN,
            debug=bool(cfg.get("debug", False)))


def cli() -> None:
    """`python -m mcl.run` (and the `mcl` command): Hydra's main, plus the closest valid name
    for a key or group choice Hydra refused."""
    try:
        main()
    except SystemExit as exit_:
        if exit_.code not in (0, None) and not _job_started:
            from mcl.cli import suggestions

            for note in suggestions(sys.argv[1:], Path(CONFIG_DIR)):
                print(note, file=sys.stderr)
        raise


if __name__ == "__main__":
    cli()
