# The README names two targets: `make demo` (set up, run the built-in study) and `make test`
# (set up, run the test suite). Both work on a fresh machine with Python 3.11 and no internet
# beyond the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip
# Every install passes the constraints file so nothing can upgrade torch past the local CPU wheel.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup setup-real test demo music clean

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

# The real-music genre study (docs/music_study.md): the soundtrack packages it cuts excerpts from
# are installed with apt-get when missing and make runs as root; otherwise it names them and stops.
music: setup
	@missing="$$($(BIN)/python -m jsuff.app.music packages)"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "make music needs the Debian packages: $$missing" >&2; \
	    echo "install them as root (sudo apt-get install $$missing) and run make music again" >&2; exit 2; \
	  fi; \
	fi
	$(BIN)/jsuff music

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
