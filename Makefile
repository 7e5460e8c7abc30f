# Two entry points on a fresh machine:  make quickstart  /  make test
# Both create .venv and install hwnas (editable) with its dependencies first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision: on this project's CPU machines pip takes this pair from local disk
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HWNAS_HOME ?= $(CURDIR)/.hwnas

.PHONY: quickstart test install clean

$(BIN)/hwnas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS) || $(BIN)/python -m pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@

install: $(BIN)/hwnas

quickstart: install
	$(BIN)/hwnas search recipes/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .hwnas
