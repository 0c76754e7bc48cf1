.PHONY: install test lint run bench compare

install:  ## CPU torch from its wheel first, so the range in pyproject installs nothing bigger
	pip install torch==2.13.0
	pip install -e ".[dev]"

test:
	python -m pytest -q

lint:
	ruff check .

run:
	python -m mcl.run

bench:
	python experiments/bench_cpu.py

compare:
	python experiments/compare_toy.py --seeds 0 1 2
