"""`python -m mcl.data prepare <benchmark> [--data-root D]`: fetch, check, cache and report.

For each stream of the benchmark: fetch what the Hub holds of it when the data is absent and a
network exists (fails fast otherwise), read the stream exactly as a run does, decode every
image, write the prepared table (`mcl.data.prepared`) and print a report of samples and bad
images per task and split (also written to `<data_root>/<benchmark>/mcl_prepared/report.json`).
Exit status 0 only when every stream is complete and every image decodes.

Adding a benchmark is one entry in BENCHMARKS: the stream YAMLs (conf/stream/) that read it.
Those streams' builders must take `data_root` and `skip_bad_images`, raise
`mcl.data.coast.MissingDataError` (naming the path and this command) when the data is absent
(ValueError when malformed), and leave bad images out via `mcl.data.images.drop_bad_images`,
listing them per split in each task's `meta["bad_images"]` (prepare reports them; runs count
them in results.json). A benchmark's `validate(data_root) -> [problems]` (the classification
modules', e.g. published split sizes) adds its problems to the report once its streams read.

Data lies in `<data_root>/<benchmark>/`, except for the classification benchmarks, which keep
the folders torchvision uses directly under the data root (MTIL shares Split-CIFAR100's
`cifar-100-python/`); prepare's report (and a Hub copy it fetches) still go to
`<data_root>/<benchmark>/`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mcl.data import core50, mtil, prepared, split_cifar100, split_imagenet_r
from mcl.data.images import image_problem
from mcl.data.task import MissingDataError, Stream
from mcl.io import write_json

STREAM_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "stream"


@dataclass(frozen=True)
class Benchmark:
    """What `prepare` needs to know of a benchmark."""

    streams: tuple[str, ...]  # conf/stream/<name>.yaml files that read it
    hub: str | None = None  # a Hugging Face dataset repo holding (part of) it, fetched if absent
    note: str = ""  # what the user must fetch by hand (printed when data is missing)
    validate: Callable[[str], list[str]] | None = None  # data_root -> problems beyond reading


def _by_hand(module) -> str:
    """The note of a classification benchmark: its module's LAYOUT."""
    return f"Download it by hand and lay it out as\n{module.LAYOUT}"


BENCHMARKS: dict[str, Benchmark] = {
    "coin": Benchmark(
        streams=("coin",), hub="Zacks-Chen/CoIN",
        note="The Hub repo holds the instruction files only; download the images of each source "
             "data set into cl_dataset/ as github.com/zackschen/CoIN's README lists."),
    "coast": Benchmark(
        streams=("coast_domain", "coast_capability", "coast_dataset"),
        note="The COAST authors publish no data (github.com/mengcaopku/Continual-LLaVA); place "
             "the annotation files and images as conf/stream/coast_*.yaml describe."),
    "mtil": Benchmark(streams=("mtil", "mtil_order2", "mtil_fewshot", "xtail"), note=_by_hand(mtil),
                      validate=mtil.validate),
    "split_cifar100": Benchmark(
        streams=("split_cifar100",), hub=split_cifar100.HUB_ID,
        note=_by_hand(split_cifar100), validate=split_cifar100.validate),
    "split_imagenet_r": Benchmark(streams=("split_imagenet_r",), note=_by_hand(split_imagenet_r),
                                  validate=split_imagenet_r.validate),
    "core50": Benchmark(streams=("core50",), note=_by_hand(core50), validate=core50.validate),
}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub can be reached now (never waits longer than `timeout`)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch(name: str, root: Path) -> str:
    """Download the benchmark's Hub part into `root`; returns what happened, in words."""
    spec = BENCHMARKS[name]
    if spec.hub is None:
        return f"{name}: nothing to fetch automatically. {spec.note}"
    if not hub_reachable():
        return (f"{name}: the Hugging Face Hub is not reachable from here (or HF_HUB_OFFLINE is "
                f"set): fetch huggingface.co/datasets/{spec.hub} elsewhere and copy it to "
                f"{root}. {spec.note}")
    from huggingface_hub import snapshot_download

    snapshot_download(spec.hub, repo_type="dataset", local_dir=str(root))
    return f"{name}: fetched huggingface.co/datasets/{spec.hub} into {root}. {spec.note}"


def _stream_yaml(stream: str) -> DictConfig:
    """conf/stream/<stream>.yaml over the stream YAMLs its `defaults` list (`_self_` last)."""
    cfg = OmegaConf.load(STREAM_CONFIGS / f"{stream}.yaml")
    parents = [_stream_yaml(d) for d in cfg.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*parents, cfg)


def _stream_config(stream: str, data_root: str):
    cfg = _stream_yaml(stream)
    cfg.data_root = data_root
    cfg.skip_bad_images = True  # count them all instead of stopping at the first
    return cfg


def _sources(cfg, root: Path) -> list[Path] | None:
    """The annotation files an instruction stream reads (None for other kinds of streams)."""
    tasks = cfg.get("tasks")
    if not tasks or not all(isinstance(t, dict | DictConfig) and "train" in t for t in tasks):
        return None
    prefix = f"{cfg.config}/" if "config" in cfg else ""  # COAST's per-configuration folders
    paths = [root / f"{prefix}{t['train']}" for t in tasks]
    paths += [root / f"{prefix}{t['test']}" for t in tasks]
    return paths + [root / t["answers"] for t in tasks if t.get("answers")]


def _read(cfg) -> Stream | str:
    """The stream `cfg` builds, or why it cannot: "missing: ..." or "malformed: ..."."""
    try:
        try:
            return instantiate(cfg, seed=0)
        except InstantiationException as wrapped:  # Hydra's wrapper: the cause says it
            raise (wrapped.__cause__ or wrapped) from None
    except MissingDataError as err:
        return f"missing: {err}"
    except ValueError as err:
        return f"malformed: {err}"


def _row(stream: str, task: str = "-", split: str = "-", samples: int = 0, bad: int = 0,
         status: str = "ok") -> dict:
    return {"stream": stream, "task": task, "split": split, "samples": samples,
            "bad_images": bad, "status": status}


def prepare(name: str, data_root: str) -> tuple[list[dict], bool]:
    """Check and cache every stream of benchmark `name`; returns the report rows and whether
    everything is complete."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    spec = BENCHMARKS[name]
    root = Path(data_root).expanduser().resolve() / name
    configs = {s: _stream_config(s, data_root) for s in spec.streams}
    for stream_name in spec.streams:  # read the files, not an earlier prepared table
        shutil.rmtree(prepared.cache_dir(root, stream_name), ignore_errors=True)
    streams = {s: _read(cfg) for s, cfg in configs.items()}
    if not root.exists() and any(isinstance(s, str) for s in streams.values()):
        print(fetch(name, root))
        streams = {s: _read(configs[s]) if isinstance(got, str) else got
                   for s, got in streams.items()}
    rows: list[dict] = []
    checked: dict[str, str | None] = {}  # image path -> problem, over all streams and tasks
    for stream_name, stream in streams.items():
        if isinstance(stream, str):
            rows.append(_row(stream_name, status=stream))
            continue
        for task in stream.tasks:
            bad_images = task.meta.setdefault("bad_images", {})
            for split in ("train", "test"):
                samples = getattr(task, split)
                for sample in samples:
                    path = sample.image
                    if not isinstance(path, np.ndarray) and str(path) not in checked:
                        checked[str(path)] = image_problem(path, decode=True)
                undecodable = {str(s.image) for s in samples
                               if not isinstance(s.image, np.ndarray) and checked[str(s.image)]}
                bad = bad_images[split] = [*bad_images.get(split, []), *sorted(undecodable)]
                setattr(task, split, [s for s in samples if isinstance(s.image, np.ndarray)
                                      or str(s.image) not in undecodable])
                rows.append(_row(stream_name, task.name, split, len(getattr(task, split)),
                                 len(bad), "ok" if not bad else f"bad, e.g. {bad[0]}"))
        sources = _sources(configs[stream_name], root)
        if sources is not None:  # the table caches annotation files (instruction streams)
            prepared.save(root, stream, sources)
    read_all = not any(isinstance(s, str) for s in streams.values())
    if spec.validate is not None and read_all:  # else the rows above already say what is wrong
        rows += [_row("-", status=f"problem: {p}") for p in spec.validate(data_root)]
    complete = all(r["status"] == "ok" for r in rows)
    if root.exists() or read_all:
        write_json(root / "mcl_prepared" / "report.json", {"benchmark": name, "rows": rows,
                                                            "complete": complete})
    return rows, complete


def format_report(rows: list[dict]) -> str:
    """The report rows as an aligned text table."""
    keys = ("stream", "task", "split", "samples", "bad_images", "status")
    table = [keys] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(keys) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False))
                     + "  " + line[-1] for line in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcl.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="fetch, check, cache and report a benchmark")
    prep.add_argument("benchmark", choices=sorted(BENCHMARKS))
    prep.add_argument("--data-root", default=os.environ.get("MCL_DATA_ROOT", "data"),
                      help="directory holding <benchmark>/ (default: $MCL_DATA_ROOT or ./data)")
    args = parser.parse_args(argv)
    rows, complete = prepare(args.benchmark, args.data_root)
    print(format_report(rows))
    print(f"{args.benchmark}: " + ("complete" if complete else
                                   "INCOMPLETE: see the rows above; runs stop at a bad image "
                                   "unless stream.skip_bad_images=true"))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
