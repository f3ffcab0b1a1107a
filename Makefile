# The two commands of the README. Each sets itself up on a fresh machine (python3 + make only).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
export MPLBACKEND ?= Agg

.PHONY: demo test lab lint test-tensorflow test-jax test-torch test-distributed bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip prints a warning line per package for the machine's unused local index folders; drop them.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[notebooks]' 2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(BIN)/python -c "import gradhealth, nbclient"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev,notebooks]' 2>&1 | grep -v 'is ignored: it is neither a file' || true
	$(BIN)/python -c "import gradhealth, jax, torch, pytest, hypothesis, nbclient"
	touch $@ $(VENV)/.demo-installed

## make demo: checkups of the three demo networks, then every course notebook executed headlessly
demo: $(VENV)/.demo-installed
	$(BIN)/gradhealth demo --out build/reports
	$(BIN)/python -m gradhealth.course --out build/notebooks

## make test: lint, then the suite on TensorFlow (with the notebooks and the slow end-to-end
## tests), then again on JAX and torch without those (the notebooks are TensorFlow, the course backend)
test: $(VENV)/.dev-installed lint test-tensorflow test-jax test-torch test-distributed

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test-tensorflow: $(VENV)/.dev-installed
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests

test-jax: $(VENV)/.dev-installed
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "not notebook and not slow" tests

test-torch: $(VENV)/.dev-installed
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -m "not notebook and not slow" tests

## make test-distributed: multi-device engines (tf.distribute, keras.distribution) on two simulated
## CPU devices, each backend in its own process (the device layout is fixed when a backend starts)
test-distributed: $(VENV)/.dev-installed
	GRADHEALTH_DEVICES=2 KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests/distributed
	GRADHEALTH_DEVICES=2 XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
		$(BIN)/python -m pytest -q tests/distributed

## make lab: JupyterLab on the course kernel
lab: $(VENV)/.demo-installed
	$(BIN)/python -m ipykernel install --user --name week5-gradients \
		--display-name "Week 5: Gradients (Python $$($(BIN)/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'))"
	$(BIN)/jupyter lab notebooks

bench: $(VENV)/.dev-installed
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache .ruff_cache
