"""Continual-learning strategies: importing this package registers every built-in one."""

from mcl.strategies import finetune, joint, lora, zero_shot  # noqa: F401
from mcl.strategies.base import STRATEGIES, ContinualStrategy, build_strategy, register

__all__ = ["STRATEGIES", "ContinualStrategy", "build_strategy", "register"]
