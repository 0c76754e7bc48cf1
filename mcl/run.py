"""`python -m mcl.run`: compose the config, check it, build the pieces, run the stream.

    python -m mcl.run                                   # finetune on toy_domain, tiny_llava
    python -m mcl.run method=lora stream=toy_capability
    python -m mcl.run -m method=finetune,lora seed=0,1  # a sweep, one directory per run
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
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


def run_suffix(override_dirname: str) -> str:
    """The part of the default run directory that tells runs with other settings apart: Hydra's
    `override_dirname` (the command-line overrides minus the keys already in the path and the
    run-only ones, conf/config.yaml) after "_", path separators replaced, a long one
    shortened to its start and a hash. Empty without such overrides."""
    if not override_dirname:
        return ""
    text = re.sub(r"[/\\]", "_", override_dirname)
    if len(text) > 80:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
        text = f"{text[:70]}..{digest}"
    return f"_{text}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mcl_sweep_group", _sweep_group, replace=True)
    OmegaConf.register_new_resolver("mcl_run_suffix", run_suffix, replace=True)


register_resolvers()


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
    from mcl.strategies.base import strategy_class

    options = OmegaConf.to_container(cfg.method, resolve=True)
    return strategy_class(options.pop("name"))(**options)


def skipped_images(stream: Stream) -> dict[str, dict[str, int]]:
    """{task: {split: samples left out}} for a missing or unreadable image (the tasks'
    `meta["bad_images"]`, filled with stream.skip_bad_images=true); empty when none was."""
    skipped = {t.name: {split: len(paths) for split, paths in t.meta["bad_images"].items()}
               for t in stream.tasks if t.meta.get("bad_images")}
    return skipped if any(n for c in skipped.values() for n in c.values()) else {}


def run(cfg: DictConfig, run_dir: str | Path, loggers: list | None = None) -> dict:
    """Run one backbone x method x stream; every check happens before any long work."""
    import lightning as L

    from mcl.compatibility import backbone_spec, check_run
    from mcl.distributed import init_from_env, is_main
    from mcl.eval_policy import EvalConfig
    from mcl.io import write_text
    from mcl.loop import LoopConfig
    from mcl.results import (
        check_fingerprint,
        fingerprint,
        is_finished,
        kept_results,
        recorded_weights,
        summary_table,
    )

    run_dir = Path(run_dir)
    # Everything random (a method's adapters, prompts and pools, a new head, dropout) is created
    # after this, so the same command gives the same numbers in every fresh process.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    settings = fingerprint(OmegaConf.to_container(cfg, resolve=True))
    if cfg.resume:  # before anything is written there (config.yaml, logs)
        check_fingerprint(run_dir, settings)
    strategy = build_method(cfg)
    evaluation = EvalConfig(**OmegaConf.to_container(cfg.get("evaluation") or {}, resolve=True))
    stream = build(cfg.stream, seed=cfg.seed)
    loop_cfg = LoopConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    check_run(strategy, backbone_spec(cfg.backbone), stream, loop_cfg.strategy)
    if loggers is None:
        loggers = [build(c) for c in (cfg.get("logger") or {}).values()]
    init_from_env(loop_cfg.accelerator)
    if is_main():
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    finished = cfg.resume and is_finished(run_dir)
    if finished and recorded_weights(run_dir) is None:
        # A finished run on a model mcl does not cache (a Hub id or a directory, named by the
        # config the fingerprint covers): kept without loading the model, which for a 7B
        # backbone is most of what a sweep started again spends on each of its finished runs.
        results = kept_results(run_dir, stream.task_names)
    else:
        results = _run_or_keep(cfg, run_dir, strategy, stream, loop_cfg, loggers, settings,
                               evaluation, finished)
    if is_main():
        from mcl.loggers import log_final

        log_final(loggers, results, run_dir / "matrix.png")
        print(summary_table(results))
        print(f"outputs in {run_dir}")
    return results


def _run_or_keep(cfg: DictConfig, run_dir: Path, strategy: ContinualStrategy, stream: Stream,
                 loop_cfg, loggers: list, settings: dict, evaluation, finished: bool) -> dict:
    """Load the backbone and check its weights and vocabulary; then keep the run if it is
    `finished` (cached weights, the same digest), else set the method up and run the stream."""
    import lightning as L

    from mcl.backbones.tiny_llava import cached_weights
    from mcl.data.vocabulary import check_vocabulary
    from mcl.loop import run_stream
    from mcl.results import check_backbone_weights, environment, kept_results

    L.seed_everything(cfg.seed, workers=True, verbose=False)  # a new head, if any
    backbone = build(cfg.backbone, _convert_="all")
    # Which pre-trained weights, where the config alone does not say (mcl's cached toy models).
    weights = cached_weights(getattr(getattr(getattr(backbone, "model", None), "config", None),
                                     "name_or_path", None))
    if cfg.resume:
        check_backbone_weights(run_dir, weights)
    check_vocabulary(backbone, cfg.backbone.name, stream, cfg.get("max_unknown_words"))
    if finished:  # on the weights it recorded: nothing to set up or run
        return kept_results(run_dir, stream.task_names)
    # Again: a tiny backbone pre-trained on the first run (not loaded from the cache) has drawn
    # random numbers, and the method's initial state must not depend on that.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    strategy.setup(backbone)
    print(strategy.describe())
    print(f"stream {stream.name}: {len(stream.tasks)} tasks ({', '.join(stream.task_names)})")
    meta = {"method": cfg.method.name, "stream": stream.name, "backbone": cfg.backbone.name,
            "seed": cfg.seed, "config": OmegaConf.to_container(cfg, resolve=True),
            "fingerprint": settings, "backbone_weights": weights, **environment()}
    skipped = skipped_images(stream)
    if skipped:
        meta["skipped_images"] = skipped
        print(f"skipped samples with a missing or unreadable image: {skipped}")
    fallbacks = {t.name: t.meta["official_scorer"] for t in stream.tasks
                 if t.meta.get("official_scorer")}
    if fallbacks:  # the benchmark's own score needs what mcl lacks (an external judge)
        meta["fallback_scorers"] = fallbacks
        print(f"tasks scored by a fallback, not their benchmark's own scorer: {fallbacks}")
    return run_stream(strategy, stream, run_dir, loop_cfg, seed=cfg.seed, loggers=loggers,
                      resume=cfg.resume, meta=meta, predictions=cfg.predictions,
                      evaluation=evaluation)


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
    # Again here: submitit (hydra/launcher=slurm) runs this function unpickled by value in a
    # process that never imported this module, so the module-level registration did not happen.
    register_resolvers()
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
