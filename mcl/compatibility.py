"""The one compatibility check of a run: method x backbone x stream x trainer.

`mcl.run` calls `check_run` once, after composing the config and before loading any weights: the
backbone is known by its class (`BackboneSpec`: family, capabilities, parts), the stream by its
tasks, the trainer by its options. Every refusal says what is wrong and what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcl.backbones.base import BackboneSpec
from mcl.data.label_space import is_classification
from mcl.data.task import Stream, Task
from mcl.strategies.base import ContinualStrategy


def backbone_spec(node: Mapping[str, Any]) -> BackboneSpec:
    """The spec of the backbone a `backbone` config node names (its `_target_` and `name`)."""
    return BackboneSpec.of_target(node["_target_"], node["name"])


def check_family(family: str, backbone: str, stream_name: str, tasks: Sequence[Task]) -> None:
    """Raise a ValueError if a backbone family cannot read the stream's tasks: classification
    backbones need tasks with meta["classes"], instruction backbones tasks with instructions."""
    if family == "classification" and not is_classification(tasks):
        raise ValueError(f"backbone {backbone!r} classifies images, but stream {stream_name!r} "
                         "is an instruction stream (its tasks list no classes); use a "
                         "classification stream, e.g. stream=toy_class_incremental, toy_mtil")
    if family == "instruction" and is_classification(tasks):
        raise ValueError(f"stream {stream_name!r} is a classification stream; backbone "
                         f"{backbone!r} answers instructions: use a CLIP or ViT backbone, e.g. "
                         "backbone=tiny_clip")


def check_trainer(strategy: ContinualStrategy, trainer_strategy: str | dict) -> None:
    """FSDP shards gradients and parameters: a method whose step hooks need them whole cannot
    run under it (a dict `trainer.strategy` is FSDP's options, mcl.sharding)."""
    if isinstance(trainer_strategy, Mapping) and not strategy.shardable:
        raise ValueError(f"method {strategy.name!r} cannot train under FSDP (trainer.strategy "
                         f"{trainer_strategy.get('name')}): its step hooks need whole gradients, "
                         "which FSDP shards; use trainer=ddp (or a single GPU) for it")


def check_run(strategy: ContinualStrategy, backbone: BackboneSpec, stream: Stream | None = None,
              trainer_strategy: str | dict | None = None) -> None:
    """Raise a ValueError if the method cannot run on the backbone, the backbone cannot read the
    stream, or the trainer cannot run the method (stream and trainer are checked when given)."""
    strategy.check_backbone(backbone)
    if stream is not None:
        check_family(backbone.family, backbone.name, stream.name, stream.tasks)
    if trainer_strategy is not None:
        check_trainer(strategy, trainer_strategy)


def method_table(backbones: Mapping[str, BackboneSpec], family: str = "instruction") -> str:
    """A Markdown table: which registered methods of `family` run on which backbone (by
    `check_backbone`, the check every run makes), a refusal's missing capabilities named."""
    from mcl.strategies import STRATEGIES

    methods = sorted(n for n, cls in STRATEGIES.items() if family in cls.families)
    rows = ["| backbone | " + " | ".join(methods) + " |",
            "| --- |" + " --- |" * len(methods)]
    for name, spec in backbones.items():
        cells = []
        for method in methods:
            missing = sorted(STRATEGIES[method].requires - spec.capabilities)
            cells.append("yes" if not missing else "no (" + ", ".join(missing) + ")")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def preset_specs(family: str = "instruction", tiny: bool = False) -> dict[str, BackboneSpec]:
    """The specs of the backbone presets in conf/backbone of `family` (stand-ins and other
    tiny presets left out unless `tiny`), by preset name."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    specs = {}
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for path in sorted((conf / "backbone").glob("*.yaml")):
            node = compose(config_name="config", overrides=[f"backbone={path.stem}"]).backbone
            spec = backbone_spec(node)
            small = path.stem.startswith("tiny_") or node.get("tiny") is not None
            if spec.family == family and (tiny or not small):
                specs[path.stem] = spec
    return specs


if __name__ == "__main__":  # the README's table: python -m mcl.compatibility
    print(method_table(preset_specs()))
