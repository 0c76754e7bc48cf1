.PHONY: install test lint run bench compare wheel-check

# torch first, so that the range in pyproject installs nothing bigger. PyPI's Linux wheel is
# the CUDA build; for the CPU build on Linux: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_INSTALL = pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

install:
	$(TORCH_INSTALL)
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

# The built wheel in a fresh virtual environment runs a micro stream from outside the checkout
# (configs are package data: nothing is read from the checkout).
ifndef WHEEL_DIR
WHEEL_DIR := $(shell mktemp -d)
endif
wheel-check:
	pip wheel -q --no-deps -w $(WHEEL_DIR)/dist .
	python3 -m venv $(WHEEL_DIR)/venv
	. $(WHEEL_DIR)/venv/bin/activate && $(TORCH_INSTALL) -q && pip install -q $(WHEEL_DIR)/dist/*.whl
	cd $(WHEEL_DIR) && MCL_CACHE=$(WHEEL_DIR)/cache HF_HUB_OFFLINE=1 $(WHEEL_DIR)/venv/bin/mcl \
		backbone=tiny_llava_micro stream=toy_micro logger=none method.epochs=1 \
		trainer.progress_bar=false hydra.run.dir=$(WHEEL_DIR)/run
	test -f $(WHEEL_DIR)/run/results.json && echo "wheel-check: ok ($(WHEEL_DIR))"
	rm -rf build
