# The two commands of the README: `make demo` (the example fleet, shown serving) and
# `make test` (the whole suite). Both set up everything they need on Debian/Ubuntu.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := bubblewrap python3 busybox-static docker.io postgresql aide chromium wrk hey haproxy nginx-light

.PHONY: demo test test-fast lint deps venv bench clean

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(BIN)/corral: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: deps $(BIN)/corral

demo: venv
	$(BIN)/python scripts/demo.py

test: venv
	@scripts/ensure_docker.sh
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -n 4 -m "not docker and not slow"

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/rollout_local.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/plan_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
