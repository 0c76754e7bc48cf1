"""Continual-learning strategies: importing this package registers every built-in one."""

from mcl.strategies import (  # noqa: F401
    continual_llava,
    finetune,
    fwd_prompt,
    joint,
    lora,
    rank_selective_lora,
    zero_shot,
)
from mcl.strategies.base import STRATEGIES, ContinualStrategy, build_strategy, register

__all__ = ["STRATEGIES", "ContinualStrategy", "build_strategy", "register"]
