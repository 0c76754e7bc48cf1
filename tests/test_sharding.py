"""trainer=fsdp without GPUs: the config composes, the FSDP units are the model's layer classes,
and a method that needs whole gradients is refused before any work. (2 CPU processes training
under FSDP, killed and resumed: tests/test_ddp.py.)"""

import pytest
from conftest import compose_config, method_options
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf

from mcl.compatibility import backbone_spec, check_run
from mcl.loop import LoopConfig
from mcl.sharding import fsdp_strategy, wrap_classes
from mcl.strategies.finetune import Finetune
from mcl.strategies.fwd_prompt import FwdPrompt


def _trainer_options(*overrides: str) -> dict:
    cfg = compose_config(["trainer=fsdp", *overrides])
    return OmegaConf.to_container(cfg.trainer, resolve=True)


def test_fsdp_config_composes_into_a_loop_config():
    cfg = LoopConfig(**_trainer_options("trainer.strategy.activation_checkpointing=true"))
    assert cfg.strategy["name"] == "fsdp" and cfg.strategy["activation_checkpointing"] is True
    assert cfg.precision == "bf16-mixed" and cfg.accelerator == "gpu"


def test_fsdp_units_are_the_decoder_and_vision_layers(micro_backbone):
    names = {cls.__name__ for cls in wrap_classes(micro_backbone, "auto")}
    assert {"LlamaDecoderLayer", "CLIPEncoderLayer"} <= names
    assert not names & {"LlavaForConditionalGeneration", "Linear", "LlamaModel"}
    with pytest.raises(ValueError, match="none of the layer classes.*NoSuchLayer"):
        wrap_classes(micro_backbone, ["NoSuchLayer"])

    strategy = fsdp_strategy(_trainer_options("trainer.strategy.activation_checkpointing=true")
                             ["strategy"], micro_backbone, "gpu")
    assert type(strategy) is FSDPStrategy
    assert strategy._state_dict_type == "full"  # checkpoints: gathered, written by rank 0
    assert strategy.kwargs["use_orig_params"] is True  # methods freeze parts of a layer
    policy_classes = set(strategy.kwargs["auto_wrap_policy"]._module_classes)
    assert {c.__name__ for c in policy_classes} == names
    assert strategy._activation_checkpointing_kwargs  # the same layers recompute activations


def test_a_method_needing_whole_gradients_is_refused_under_fsdp():
    """By the run's one compatibility check, from the backbone's class: before any loading."""
    assert Finetune.shardable and not FwdPrompt.shardable
    spec = backbone_spec(compose_config(["backbone=tiny_llava_micro"]).backbone)
    fsdp = LoopConfig(**_trainer_options()).strategy
    with pytest.raises(ValueError, match="cannot train under FSDP.*trainer=ddp"):
        check_run(FwdPrompt(**method_options("fwd_prompt")), spec, trainer_strategy=fsdp)
    check_run(Finetune(**method_options("finetune")), spec, trainer_strategy=fsdp)  # passes
