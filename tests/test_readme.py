"""The README's method tables and the method configs cannot drift from the registered strategies:
every strategy has one row (in the table of the families it runs on), one conf/method/<name>.yaml
whose `name` is its file name, and every scale preset in conf/experiment/ selects a registered
method."""

import inspect
import re
from pathlib import Path

import yaml

from mcl.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]


def _table_after(text: str, heading: str) -> list[str]:
    """Method names in the first markdown table after the line starting with `heading`."""
    lines = text[text.index(heading):].splitlines()[1:]
    rows = []
    for line in lines:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\| `([a-z0-9_]+)` \|", line)
        if match:
            rows.append(match.group(1))
    return rows


def test_readme_method_tables_list_every_registered_strategy_once():
    text = (ROOT / "README.md").read_text()
    general = _table_after(text, "Methods (`method=`):")
    classification = _table_after(text, "Classification-only methods")
    listed = general + classification
    assert sorted(listed) == sorted(set(listed)), "a method is listed twice"
    assert set(listed) == set(STRATEGIES), (
        f"missing from the README: {sorted(set(STRATEGIES) - set(listed))}; "
        f"not registered: {sorted(set(listed) - set(STRATEGIES))}")
    assert all("instruction" in STRATEGIES[n].families for n in general)
    assert all(STRATEGIES[n].families == {"classification"} for n in classification)


def test_method_names_mean_one_thing():
    configs = {p.stem: yaml.safe_load(p.read_text())
               for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert set(configs) == set(STRATEGIES)
    assert all(cfg["name"] == stem for stem, cfg in configs.items())
    for path in (ROOT / "conf" / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path.name
        selected = re.findall(r"- override /method: ([a-z0-9_]+)", text)
        assert len(selected) == 1 and selected[0] in STRATEGIES, path.name


def test_a_method_has_one_source_of_defaults():
    """Every constructor option is in the method's YAML, and no constructor has a default of its
    own (zero_shot trains nothing and has no options)."""
    for name, cls in STRATEGIES.items():
        config = yaml.safe_load((ROOT / "conf" / "method" / f"{name}.yaml").read_text())
        given = set(config) | {d.split("@")[-1].split(":")[0] for d in _defaults(config)}
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or not klass.__module__.startswith("mcl.strategies"):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind is not p.KEYWORD_ONLY or name == "zero_shot":
                    continue
                assert p.default is p.empty, f"{klass.__name__}({p.name}=...) has a default"
                assert p.name in given, f"conf/method/{name}.yaml does not set {p.name}"


def _defaults(config: dict) -> list[str]:
    """Package names the YAML's defaults list adds (`/backbone@booster: ...` adds `booster`)."""
    entries = config.get("defaults", [])
    return [next(iter(e)) for e in entries if isinstance(e, dict)]


def test_readme_backbone_table_is_the_compatibility_check():
    """The README's method x backbone table is what `python -m mcl.compatibility` prints."""
    from mcl.compatibility import method_table, preset_specs

    assert method_table(preset_specs()) in (ROOT / "README.md").read_text()
