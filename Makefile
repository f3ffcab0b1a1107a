# The README's commands. Each sets itself up on a fresh machine (python3 + make; apt for Chromium).
#
#   make demo        checkups of the demo networks, every notebook executed (HTML with figures)
#   make student     build/student: the notebooks to hand out (answers removed, no outputs)
#   make instructor  build/instructor: everything, executed, with speaker notes
#   make slides      build/slides: reveal.js decks for the 2-hour and 3-hour timelines (offline)
#   make docs        build/site: guide, lecture notes, executed notebooks, slides, API reference
#   make test        lint, then the suite on TensorFlow, JAX and torch
#   make lab         JupyterLab on the course kernel
#
# To add a target: give it the stamp it needs ($(DEV) for tests, $(DEMO) for the course) and add
# it to .PHONY; `make help` lists every target that has a `## name: text` line.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
COURSE := $(BIN)/python -m gradhealth.course
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
# No MPLBACKEND here: a kernel inherits it, and MPLBACKEND=Agg kept every notebook figure out of
# the executed notebooks. Kernels started by gradhealth.course draw inline whatever the shell
# says; scripts pick Agg themselves when there is no display (gradhealth.report.plots.pyplot).

# Set-up stamps: the venv with the course (DEMO), with the docs tools (DOCS), with everything
# the tests need (DEV); the offline scripts of the HTML pages and slides (VENDOR).
DEMO   := $(VENV)/.demo-installed
DOCS   := $(VENV)/.docs-installed
DEV    := $(VENV)/.dev-installed
VENDOR := build/vendor/.unpacked
# Executed notebooks, reused by instructor/slides/docs while newer than the committed ones.
EXECUTED := build/notebooks/.executed
NOTEBOOK_SOURCES := $(wildcard notebooks/*.ipynb)
SCREENSHOTS := build/screenshots

.PHONY: help demo student instructor slides docs test lint test-tensorflow test-jax test-torch \
	test-tensorflow-torch test-jax-distributed test-distributed lab bench vendor browser clean

## help: list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip prints a warning line per package for the machine's unused local index folders; drop them.
$(DEMO): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[notebooks]' 2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(BIN)/python -c "import gradhealth, nbclient, nbconvert"
	touch $@

$(DOCS): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[notebooks,docs]' 2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(BIN)/python -c "import gradhealth, mkdocs, material, mkdocs_jupyter, mkdocstrings"
	touch $@ $(DEMO)

$(DEV): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev,notebooks,docs]' 2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(BIN)/python -c "import gradhealth, jax, torch, pytest, hypothesis, nbclient, mkdocs"
	touch $@ $(DEMO) $(DOCS)

# reveal.js, require.js, jQuery and MathJax for pages that work offline: two pip packages that
# ship them (pinned in gradhealth.course.render.VENDOR_PACKAGES), downloaded, not installed.
$(VENDOR): src/gradhealth/course/render.py | $(DEMO)
	$(PIP) download --no-deps -d build/wheels $$($(BIN)/python -c \
		"from gradhealth.course.render import VENDOR_PACKAGES; print(*VENDOR_PACKAGES)") \
		2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(COURSE) vendor --wheels build/wheels --out build/vendor
	touch $@

## vendor: unpack the pages' offline scripts into build/vendor
vendor: $(VENDOR)

# Headless Chromium (Debian's package) checks the pages; without it the checks say SKIPPED.
## browser: install Debian's chromium for the page checks when missing (needs root or sudo)
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| [ -n "$$GRADHEALTH_CHROMIUM" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "NOTE: no Chromium and no apt-get: the page checks will be SKIPPED (install Chromium, or set GRADHEALTH_CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
		|| echo "NOTE: apt-get could not install chromium: the page checks will be SKIPPED"; \
	elif sudo -n true 2>/dev/null; then \
		(sudo apt-get install -y -q chromium >/dev/null 2>&1 || (sudo apt-get update -q >/dev/null && sudo apt-get install -y -q chromium >/dev/null)) \
		|| echo "NOTE: apt-get could not install chromium: the page checks will be SKIPPED"; \
	else \
		echo "NOTE: no Chromium, and installing it needs root: the page checks will be SKIPPED (sudo apt-get install chromium)"; \
	fi

$(EXECUTED): $(NOTEBOOK_SOURCES) | $(DEMO) $(VENDOR)
	$(COURSE) run --out build/notebooks
	touch $@

## demo: checkups of the three demo networks, then every notebook executed into build/notebooks
## demo:   (.ipynb + .html with their figures), each page checked in Chromium (build/screenshots)
demo: $(DEMO) $(VENDOR) browser
	$(BIN)/gradhealth demo --out build/reports
	$(COURSE) run --out build/notebooks
	touch $(EXECUTED)
	$(COURSE) pages build/notebooks/*.html --screenshots $(SCREENSHOTS)

## student: build/student, the notebooks students get: answers and instructor cells removed
student: $(DEMO)
	$(COURSE) edition student --out build/student

## instructor: build/instructor, every cell executed, answers and speaker notes (.ipynb + .html)
instructor: $(EXECUTED) $(VENDOR)
	$(COURSE) edition instructor --out build/instructor --executed build/notebooks --html

## slides: build/slides/{2h,3h}/*.slides.html, reveal.js decks of the executed notebooks
slides: $(EXECUTED) $(VENDOR) browser
	$(COURSE) slides --out build/slides --executed build/notebooks
	$(COURSE) pages build/slides/3h/*.slides.html --screenshots $(SCREENSHOTS)/slides

## docs: build/site, the documentation site (mkdocs, strict), checked in Chromium
docs: $(DOCS) $(EXECUTED) $(VENDOR) browser
	$(COURSE) slides --out build/slides --executed build/notebooks
	$(COURSE) site-src --out build/site-src --executed build/notebooks --slides build/slides
	$(BIN)/mkdocs build --strict --quiet -f mkdocs.yml
	$(COURSE) pages build/site/index.html build/site/api.html build/site/slides.html \
		build/site/notebooks/1_vanishing_gradients_demonstration.html --screenshots $(SCREENSHOTS)/site

## test: lint, then the suite in two jobs side by side (each backend is its own process; output
## test:   is printed per target): TensorFlow (with the notebooks, editions, slides, site and the
## test:   slow end-to-end tests) then torch, beside JAX then the multi-device tests. The split
## test:   evens the two jobs (a fresh clone: TensorFlow 1087 s + torch 113 s against JAX 1157 s
## test:   + multi-device 86 s).
test: $(DEV) lint $(VENDOR) browser
	$(MAKE) --no-print-directory -j2 --output-sync=target test-tensorflow-torch test-jax-distributed

test-tensorflow-torch: $(DEV) $(VENDOR) browser
	$(MAKE) --no-print-directory -j1 test-tensorflow test-torch

test-jax-distributed: $(DEV)
	$(MAKE) --no-print-directory -j1 test-jax test-distributed

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test-tensorflow: $(DEV) $(VENDOR) browser
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests

test-jax: $(DEV)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not notebook and not slow" tests

test-torch: $(DEV)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -m "not notebook and not slow" tests

## test-distributed: multi-device engines (tf.distribute, keras.distribution) on two simulated
## CPU devices, each backend in its own process (the device layout is fixed when a backend starts)
test-distributed: $(DEV)
	GRADHEALTH_DEVICES=2 KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests/distributed
	GRADHEALTH_DEVICES=2 XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
		$(BIN)/python -m pytest -q tests/distributed

## lab: JupyterLab on the course kernel (figures inline even where the shell sets MPLBACKEND)
lab: $(DEMO)
	$(BIN)/python -m ipykernel install --user --name week5-gradients \
		--env MPLBACKEND module://matplotlib_inline.backend_inline \
		--display-name "Week 5: Gradients (Python $$($(BIN)/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'))"
	$(BIN)/jupyter lab notebooks

bench: $(DEV)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache .ruff_cache
