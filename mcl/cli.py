"""What `python -m mcl.run` does around a run: the console saved to run.log, a failure recorded in
failed.json, a user's mistake said in one line (the traceback only with `debug=true` or
HYDRA_FULL_ERROR=1), and the closest valid name for a mistyped key or group choice.

Kept free of torch and Lightning imports: `--help` and a bad command line answer in seconds.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

DEBUG_HINT = "(the traceback: add debug=true, or set HYDRA_FULL_ERROR=1)"


class ConfigError(ValueError):
    """A config value of the wrong type or an unknown key, found before any work starts."""


def is_user_error(err: BaseException) -> bool:
    """Errors whose message says what to fix: bad values, missing data, unreadable files.
    Anything else is a bug in mcl or a library and keeps its traceback."""
    return isinstance(err, (ValueError, OSError))


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The valid name a user most likely meant: same letters in another case, the initials of a
    snake_case name (`learning_rate` -> `lr`), else the nearest by spelling."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]

    def initials(text: str) -> str:
        return "".join(part[0] for part in text.split("_") if part)

    for choice in choices:
        if "_" in name and initials(name) == choice or "_" in choice and initials(choice) == name:
            return choice
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """' Did you mean <prefix><closest>?' or '' when nothing is close."""
    best = closest(name, choices)
    return f" Did you mean {prefix}{best}?" if best else ""


class _Tee:
    """A text stream that writes to the console and to a log file. A progress bar's redraws
    (carriage returns) reach the file as its last state only."""

    def __init__(self, console, log) -> None:
        self._console, self._log, self._line = console, log, ""

    def write(self, text: str) -> int:
        self._console.write(text)
        self._line += text
        if "\n" in self._line:
            *done, self._line = self._line.split("\n")
            self._log.write("".join(line.rsplit("\r", 1)[-1] + "\n" for line in done))
            self._log.flush()
        return len(text)

    def flush(self) -> None:
        self._console.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding... as the console's
        return getattr(self._console, name)


@contextlib.contextmanager
def console_saved(path: Path) -> Iterator[None]:
    """Everything printed while inside, also appended to `path` (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        try:
            yield
        finally:
            for tee in (sys.stdout, sys.stderr):
                if tee._line:
                    log.write(tee._line.rsplit("\r", 1)[-1] + "\n")
            sys.stdout, sys.stderr = saved


def _write_failure(run_dir: Path, err: BaseException) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from mcl.io import write_json

    write_json(run_dir / "failed.json", {"error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()})


def run_job(run: Callable[[], object], run_dir: Path, multirun: bool, debug: bool) -> None:
    """`run()` with its console saved to run_dir/run.log. A failure leaves failed.json (which
    `python -m mcl.report` shows); in a sweep the next job then starts; a single run ends with
    the error's message alone (exit code 1) when it is the user's to fix."""
    from mcl.checkpointing import Interrupted

    debug = debug or os.environ.get("HYDRA_FULL_ERROR") == "1"
    with console_saved(run_dir / "run.log"):
        try:
            run()
            return
        except Interrupted as stop:
            # SIGINT / SIGTERM: the step checkpoint is written; say so, and how to go on. A
            # sweep stops too: the user (or the scheduler) asked for it.
            print(f"\ninterrupted ({stop.signal_name}): {stop.saved}.\nResume with the same "
                  f"command: python -m mcl.run {shlex.join(sys.argv[1:])}", file=sys.stderr)
            sys.exit(128 + stop.signum)  # the shell's convention: 130 SIGINT, 143 SIGTERM
        except Exception as err:
            _write_failure(run_dir, err)
            if multirun:
                print(f"run failed, the sweep goes on: {type(err).__name__}: {err}",
                      file=sys.stderr)
                return
            if debug or not is_user_error(err):
                raise
            print(f"error: {err}\n{DEBUG_HINT}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------- the command line, on failure


def _override_choices(arg: str) -> tuple[str, list[str]] | None:
    """(key, values) of a `key=value` command-line override (sweeps and lists split)."""
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    key = key.lstrip("+~")
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return key, [v.strip() for v in value.split(",") if v.strip()]


def suggestions(argv: list[str], conf_dir: Path) -> list[str]:
    """For a command line Hydra refused: the closest valid group choice or config key of each
    override that names none (`method=lorra` -> lora, `method.lrr=1` -> method.lr)."""
    from omegaconf import OmegaConf

    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()} - {"hydra"}
    notes: list[str] = []
    chosen: dict[str, str] = {}
    for arg in argv:
        parsed = _override_choices(arg)
        if parsed is None or parsed[0] not in groups | {"hydra/launcher"}:
            continue
        key, values = parsed
        folder = conf_dir / key
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if key == "hydra/launcher":
            options += ["basic", "joblib", "submitit_local", "submitit_slurm"]
        for value in values:
            if value not in options:
                notes.append(f"{key}={value}: no such {key}.{did_you_mean(value, options)}")
            elif key not in chosen:
                chosen[key] = value
    defaults = OmegaConf.load(conf_dir / "config.yaml")
    top = set(defaults) - {"defaults", "hydra"}
    for entry in defaults.get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for group, choice in dict(entry).items():
                chosen.setdefault(str(group), str(choice))
    for arg in argv:
        parsed = _override_choices(arg)
        if parsed is None or arg.startswith("+") or parsed[0] in groups or "/" in parsed[0]:
            continue
        key = parsed[0]
        head, _, rest = key.partition(".")
        if key.startswith("hydra."):
            continue
        if head not in groups | top:
            notes.append(f"{key}: no such key.{did_you_mean(head, sorted(groups | top))}")
        elif head in groups and rest and chosen.get(head) not in (None, "null"):
            path = conf_dir / head / f"{chosen[head]}.yaml"
            if path.is_file():
                node = _with_defaults(path)
                first = rest.split(".")[0]
                if first not in node:
                    notes.append(f"{key}: {head} {chosen[head]!r} has no key {first!r}."
                                 f"{did_you_mean(first, sorted(node), head + '.')}"
                                 f"{_swept_hint(argv, head, arg)}")
    return notes


def _swept_hint(argv: list[str], head: str, arg: str) -> str:
    """Where `head` (or `experiment`, which chooses it) is swept, Hydra checks every fixed
    override against the default config before the sweep: a key only the swept choices have
    passes as a one-value sweep, which is checked per job."""
    swept = [a.split("=", 1)[0].lstrip("+~") for a in argv
             if (parsed := _override_choices(a)) and parsed[0] in (head, "experiment")
             and len(parsed[1]) > 1]
    if not swept:
        return ""
    key, value = arg.split("=", 1)
    return (f" With {swept[0]}= swept, Hydra checks fixed overrides against the default "
            f"{head} first: if the swept choices have the key, give it as a one-value sweep, "
            f"{key}=choice({value}).")


def _with_defaults(path: Path) -> set[str]:
    """The keys a group's YAML defines, its own `defaults` (same group) included."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    keys = set(node) - {"defaults"}
    for parent in node.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            other = path.parent / f"{parent}.yaml"
            if other.is_file():
                keys |= _with_defaults(other)
    return keys
