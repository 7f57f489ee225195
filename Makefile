# Two commands on a fresh machine (Python ≥ 3.10 with venv; no GPU needed):
#   make demo   create .venv, install vmmlib, run the demo pipeline on built-in sample data
#   make test   create .venv, install vmmlib with its dev extra, run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: demo test install lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0   # the CPU build; any other spec may pull a multi-GB CUDA build
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps cn-clip==1.6.0   # only its Chinese WordPiece vocabulary, for tests; its deps pull a CUDA torch
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/vmm run params/pipelines/qqbrowser_sample.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q tests notebooks --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check vmmlib tests benchmarks
	$(VENV)/bin/ruff check vmmlib tests benchmarks

clean:
	rm -rf runs .venv
