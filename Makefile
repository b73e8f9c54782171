# Two commands on a fresh machine: `make reproduce-<paper>` and `make test`.
# Every target that needs the environment depends on `setup`, which is a no-op when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DATA := data/synthetic
PAPERS := ivgt endogsim depthvlm ide3d vlm3 g2vlm

# The default benchmark: a train split and a fixed test split (same generator version and seed,
# same scenes).
TRAIN_SCENES ?= 64
TEST_SCENES ?= 32
VIEWS ?= 8
SIZE ?= 128
SEED ?= 0

.PHONY: setup test test-cuda gpu-check data benchmark perf contact-sheet cherry-pick check-imports clean help \
	$(addprefix reproduce-,$(PAPERS))

help:
	@echo "make setup            create .venv and install the project (torch CPU wheel first)"
	@echo "make test             the CPU test suite"
	@echo "make gpu-check        CUDA machine: cuda tests + perf CUDA rows -> results/gpu_check.json"
	@echo "make data             generate the synthetic benchmark in $(DATA)"
	@echo "make reproduce-PAPER  reproduce one paper: $(PAPERS)"
	@echo "make benchmark        leaderboard over results/*/results.json and perf benchmarks"
	@echo "make perf             performance benchmarks only (results/perf/)"
	@echo "make cherry-pick      each package's tests, run on a copy of <pkg>/ + common/ alone"

setup: $(STAMP)

# torch is installed on its own first, pinned by constraints.txt, so that pip never resolves an
# unpinned torch (which would pull the CUDA packages) while installing the rest.
$(STAMP): pyproject.toml constraints.txt
	@# open3d's wheel links libusb-1.0 (Debian: libusb-1.0-0); install it where we may
	@if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq --no-install-recommends libusb-1.0-0 >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends libusb-1.0-0 >/dev/null 2>&1) || \
	    echo "make setup: could not install libusb-1.0-0; open3d (a benchmark peer) will not import"; \
	  else echo "make setup: libusb-1.0 missing (apt-get install libusb-1.0-0); open3d will not import"; fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-cuda: setup
	$(PY) -m pytest -q -m cuda

# One command on a CUDA machine (~8 minutes at most; QUICK=1 for the perf benchmarks' --quick): every
# cuda test, then the CUDA rows of the perf benchmarks, in one JSON. Exit 2 without a CUDA device.
gpu-check: setup
	$(PY) scripts/gpu_check.py --out results/gpu_check.json $(if $(QUICK),--quick)

$(DATA)/train/index.json: | setup
	$(PY) -m common.synthetic --out $(DATA) --split train --scenes $(TRAIN_SCENES) --views $(VIEWS) --size $(SIZE) --seed $(SEED)

$(DATA)/test/index.json: | setup
	$(PY) -m common.synthetic --out $(DATA) --split test --scenes $(TEST_SCENES) --views $(VIEWS) --size $(SIZE) --seed $(SEED)

data: $(DATA)/train/index.json $(DATA)/test/index.json

$(addprefix reproduce-,$(PAPERS)): reproduce-%: setup
	@if [ -f $*/reproduce.py ]; then $(PY) -m $*.reproduce; \
	else echo "make reproduce-$*: not implemented yet (see the $* issue); nothing was run" >&2; exit 2; fi

perf: setup
	$(PY) -m benchmarks.perf all

benchmark: setup data
	$(PY) -m benchmarks.run --train-missing $(if $(METHODS),--methods $(METHODS)) $(if $(TASKS),--tasks $(TASKS)) --out results/leaderboard
	$(PY) -m benchmarks.leaderboard --results results --out results/papers
	$(PY) -m benchmarks.perf all

contact-sheet: setup data
	$(PY) scripts/contact_sheet.py --data $(DATA) --split test --out results/contact_sheet.png

cherry-pick: setup
	CHERRY_PICK_FULL=1 $(PY) -m pytest -q tests/test_cherry_pick.py

check-imports: setup
	$(PY) -m pytest -q tests/test_dependency_rule.py

clean:
	rm -rf results build *.egg-info .pytest_cache
