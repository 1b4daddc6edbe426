# The README names two targets: `make demo` (set up, run the built-in study) and `make test`
# (set up, run the test suite). Both work on a fresh machine with Python 3.11 and no internet
# beyond the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip
# Every install passes the constraints file so nothing can upgrade torch past the local CPU wheel.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup setup-real test demo clean

setup: $(VENV)/.installed setup-real

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[torch,test]" --config-settings editable_mode=compat
	touch $@

# The real detectors of docs/real_models.md. --no-deps on purpose: two of them declare torchaudio,
# which must never be installed here; requirements-real.txt lists what they really need.
setup-real: $(VENV)/.real-installed

$(VENV)/.real-installed: requirements-real.txt constraints.txt | $(VENV)/.installed
	$(PIP) install -q --no-deps -c constraints.txt -r requirements-real.txt
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/jsuff demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
