# Slipway: `make demo` (the main job on the embedded local stack) and `make test`.
PYTHON    ?= $(shell command -v python3.11 || command -v python3)
VENV      ?= .venv
PY        := $(VENV)/bin/python
# Wheels are kept between clones (pip's HTTP cache stores nothing here): repeat installs are offline and fast.
WHEELHOUSE ?= $(HOME)/.cache/slipway/wheels
STAMP     := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-prefect-oldest bench deploy worker local-up local-down clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(WHEELHOUSE)
	@echo "installing into $(VENV) (wheelhouse $(WHEELHOUSE))"
	@$(PY) -m pip install -q --disable-pip-version-check --no-index --find-links $(WHEELHOUSE) -r requirements.lock 2>/dev/null \
	  || { $(PY) -m pip download -q --disable-pip-version-check -d $(WHEELHOUSE) -r requirements.lock setuptools wheel \
	       && $(PY) -m pip install -q --disable-pip-version-check --no-index --find-links $(WHEELHOUSE) -r requirements.lock; }
	@$(PY) -m pip download -q --disable-pip-version-check -d $(WHEELHOUSE) setuptools wheel 2>/dev/null || true
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --find-links $(WHEELHOUSE) -e .
	@touch $(STAMP)

demo: install
	$(PY) -m slipway.local.demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -q tests/unit

# The oldest Prefect Slipway supports (pyproject: prefect>=3.9.0,<3.10; the lock pins the newest, 3.9.1), in a venv of
# its own: the unit tests and the flows that use Prefect's private lease API (tasks/prefect_gaps.py).
PREFECT_OLDEST ?= 3.9.0
OLDEST_VENV    ?= .venv-prefect-oldest
test-prefect-oldest:
	@test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	@mkdir -p $(WHEELHOUSE)
	@$(OLDEST_VENV)/bin/python -m pip install -q --disable-pip-version-check --find-links $(WHEELHOUSE) "prefect==$(PREFECT_OLDEST)" ".[local,test]"
	@$(OLDEST_VENV)/bin/python -c "import prefect; print('Prefect', prefect.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -q $(PYTEST_ARGS) tests/unit tests/flows/test_release_flow.py tests/flows/test_locks.py

bench: install
	$(PY) bench/cli_bench.py
	$(PY) bench/scale_bench.py
	$(PY) bench/release_bench.py
	$(PY) bench/container_bench.py
	$(PY) bench/canary_bench.py
	$(PY) bench/progressive_bench.py

# Deploy prefect.yaml to the server in PREFECT_API_URL (else the local stack's): work pool, block types, deployments.
deploy: install
	$(PY) -m deployments.deploy

# A worker at PREFECT_API_URL or, when unset, at the local stack; 10 client retries unless PREFECT_CLIENT_MAX_RETRIES
# is set (a SQLite server answers writes that race with 503; docs/scale.md).
worker: install
	$(PY) -m deployments.worker

local-up: install
	$(VENV)/bin/slipway local up

local-down: install
	$(VENV)/bin/slipway local down

clean:
	-$(VENV)/bin/slipway local down 2>/dev/null
	rm -rf $(VENV) build *.egg-info .pytest_cache
