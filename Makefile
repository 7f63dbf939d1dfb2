# Two commands for a newcomer: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
PORT ?= 8470

.PHONY: demo test test-fast check bench soak lint format typecheck clean system-deps wheels-matrix bundle

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes; the install is editable so code edits need none.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Tests only: an independent Sparkplug B decoder. It pins paho-mqtt<2 although its
	# decoding never touches paho, so it goes in without its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps 'pysparkplug==0.6.1'
	touch $(STAMP) $(RUNTIME)

# The demo needs the runtime only: the simulator (sim) and the camera inspection (vision), no
# dev tools. Quiet, so that the first line it prints is the status page's address.
$(RUNTIME): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip install --quiet -e '.[sim,vision]'
	@touch $(RUNTIME)

demo: $(RUNTIME)
	@$(BIN)/lineside demo --port $(PORT)

# The tests run a real mosquitto broker and drive Debian's headless Chromium (never a
# downloaded browser): install them with apt when missing, as root or through sudo.
SYSTEM_PROGRAMS := mosquitto:mosquitto chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PROGRAMS); do prog=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$prog >/dev/null || [ -x /usr/sbin/$$prog ] || [ -x /usr/bin/$$prog ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; \
	  else echo "make test needs:$$missing; install them with: apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing (apt)"; \
	  $$sudo apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

# The whole suite stays under 10 minutes on 2 cores: the slowest tests are listed at the end
# of each run, so one that grows is seen.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q --durations=15

# The inner loop: every test but the slow ones (marked @pytest.mark.slow: at least ~2 s each on
# a loaded 2-core box, measured with pytest --durations=0). Under 2 minutes on 2 cores.
test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m 'not soak and not slow'

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# mypy cannot take the folder name firmware-sim; a symlink gives it the import name.
typecheck: $(STAMP)
	mkdir -p build/mypy-path && ln -sfn ../../firmware-sim build/mypy-path/firmware_sim
	MYPYPATH=build/mypy-path $(BIN)/mypy -p agent -p connectors -p vision -p firmware_sim -p tests

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

soak: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m soak

# Does every dependency have a wheel for aarch64 and x86-64 on Python 3.11-3.13? (network)
wheels-matrix: $(STAMP)
	$(BIN)/python -m benchmarks.wheels matrix

# An offline install: make bundle ARCH=aarch64 PY=3.11 EXTRAS=vision writes dist/*.tar.gz.
ARCH ?= $(shell uname -m)
PY ?= 3.11
EXTRAS ?=
bundle: $(STAMP)
	$(BIN)/python -m benchmarks.wheels bundle --arch $(ARCH) --python $(PY) --extras '$(EXTRAS)'

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
