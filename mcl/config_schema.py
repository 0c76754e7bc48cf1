"""Check a composed config against the code that will receive it, before any work starts.

The schema of each config group is the signature of what it configures: `method` the strategy
class's `__init__` (and its bases' where it forwards `**kwargs`), `stream` and `backbone` their
`_target_`, `trainer` the `LoopConfig` dataclass. So a key no code reads, or a value of the wrong
type, fails here with the key, the expected type and the value, instead of deep inside a run
(`method.lr=abc` used to end in "'<=' not supported between 'str' and 'int'").
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mcl.cli import ConfigError, did_you_mean

TOP_LEVEL = {"seed": int, "resume": bool, "data_root": str, "debug": bool,
             "max_unknown_words": float | None}


def _hints(fn: Callable) -> dict[str, Any]:
    """Parameter annotations of `fn`, resolved; those that cannot be are left out."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation names something only imported for type checkers
        scope = getattr(fn, "__globals__", {})
        hints = {}
        for name, note in getattr(fn, "__annotations__", {}).items():
            try:
                hints[name] = eval(note, scope) if isinstance(note, str) else note  # noqa: S307
            except Exception:
                continue
        return hints


def parameters(target: Callable) -> tuple[dict[str, Any], bool]:
    """({argument: annotation}, accepts any other keyword) of a function or class. A class
    whose `__init__` passes `**kwargs` on is followed up its bases."""
    params: dict[str, Any] = {}
    callables = ([c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__
                  and c is not object] if inspect.isclass(target) else [target])
    for fn in callables:
        hints = _hints(fn)
        open_ended = False
        for name, p in inspect.signature(fn).parameters.items():
            if name in ("self", "cls") or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                open_ended = True
                continue
            params.setdefault(name, hints.get(name, Any))
        if not open_ended:
            return params, False
    return params, True


def conforms(value: Any, hint: Any) -> bool:
    """Whether a plain config value (after `OmegaConf.to_container`) fits a type annotation."""
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, typing.TypeVar):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or hint is Path:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, set, frozenset, Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args and args[-1] is not Ellipsis or len(args) == 2 else Any
        return all(conforms(v, inner) for v in value) if args else True
    if container in (dict, Mapping, typing.Mapping):
        if not isinstance(value, dict):
            return False
        return all(conforms(v, args[1]) for v in value.values()) if len(args) == 2 else True
    if inspect.isclass(container):
        return isinstance(value, container)
    return True


def type_name(hint: Any) -> str:
    """An annotation as a person writes it: `float`, `int or None`, `list of str`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if hint is type(None):
        return "None"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple, Sequence, typing.Sequence) and args:
        return f"list of {type_name(args[0])}"
    if origin in (dict, Mapping, typing.Mapping):
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def check_arguments(prefix: str, target: Callable, options: Mapping[str, Any], what: str,
                    injected: Sequence[str] = ()) -> None:
    """Every key of `options` an argument of `target` and of its annotated type; else a
    ConfigError naming `prefix.key`, the expected type and the value, or the closest key."""
    params, open_ended = parameters(target)
    for key, value in options.items():
        if key.startswith("_") or key in injected:
            continue
        if key not in params:
            if open_ended:
                continue
            raise ConfigError(
                f"{prefix}.{key}: {what} takes no such option."
                f"{did_you_mean(key, params, prefix + '.')} Its options: "
                f"{', '.join(sorted(p for p in params if p not in injected))}")
        if not conforms(value, params[key]):
            raise ConfigError(
                f"{prefix}.{key}: expected {type_name(params[key])}, got {value!r} "
                f"({type(value).__name__}); e.g. {prefix}.{key}=<{type_name(params[key])}>")


def _container(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def validate(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first key no code reads or value of the wrong type."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required, and not given; set it on the command "
                          f"line, e.g. {missing[0]}=<value>")
    for key, hint in TOP_LEVEL.items():
        if key in cfg and not conforms(cfg[key], hint):
            raise ConfigError(f"{key}: expected {type_name(hint)}, got {cfg[key]!r} "
                              f"({type(cfg[key]).__name__})")
    from hydra.utils import get_method

    import mcl.strategies  # noqa: F401  (registers every built-in strategy)
    from mcl.strategies.base import STRATEGIES

    method = _container(cfg.method)
    name = method.pop("name", None)
    if name not in STRATEGIES:
        raise ConfigError(f"method.name: unknown method {name!r}."
                          f"{did_you_mean(str(name), STRATEGIES)} Registered: "
                          f"{', '.join(sorted(STRATEGIES))}")
    check_arguments("method", STRATEGIES[name], method, f"method {name!r}")
    for group, injected in (("stream", ("seed",)), ("backbone", ())):
        options = _container(cfg[group])
        target = get_method(options["_target_"])
        check_arguments(group, target, options, f"{group} {options.get('name')!r}", injected)
    from mcl.loop import LoopConfig

    fields = {f.name: f.type for f in dataclasses.fields(LoopConfig)}
    hints = typing.get_type_hints(LoopConfig)
    for key, value in _container(cfg.trainer).items():
        if key not in fields:
            raise ConfigError(f"trainer.{key}: no such trainer option."
                              f"{did_you_mean(key, fields, 'trainer.')} Options: "
                              f"{', '.join(fields)} (trainer.extra takes any other "
                              "lightning.Trainer argument)")
        if not conforms(value, hints[key]):
            raise ConfigError(f"trainer.{key}: expected {type_name(hints[key])}, got "
                              f"{value!r} ({type(value).__name__})")
