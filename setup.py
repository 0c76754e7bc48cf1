"""Ships conf/ inside the package as `mcl/conf` (package data), without moving it: the wheel and
`pip install .` then run from any directory (mcl.run looks for mcl/conf, else ../conf)."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

# conf/ and each config group folder in it, as the packages mcl.conf, mcl.conf.<group>, ...
CONF = ["mcl.conf", *("mcl.conf." + ".".join(p.relative_to("conf").parts)
                      for p in sorted(Path("conf").rglob("*")) if p.is_dir())]

setup(
    packages=[*find_namespace_packages(include=["mcl", "mcl.*", "hydra_plugins", "hydra_plugins.*"],
                                       exclude=["*__pycache__"]),
              *CONF],
    package_dir={"mcl.conf": "conf"},
    package_data={name: ["*.yaml"] for name in CONF},
)
