"""Continual-learning strategies: importing this package registers every module in it, so a new
method is one file here (with `@register`) and one YAML in conf/method/."""

import importlib
import pkgutil

from mcl.strategies.base import STRATEGIES, ContinualStrategy, build_strategy, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "ContinualStrategy", "build_strategy", "register"]
