# The two commands of the README: `make demo` (the example fleet, shown serving) and
# `make test` (the whole suite). Both set up everything they need on Debian/Ubuntu.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# what the demo needs; the tests add the engines they run against; the benches their peers
DEMO_PACKAGES  := bubblewrap python3
TEST_PACKAGES  := $(DEMO_PACKAGES) iproute2 busybox-static mmdebstrap docker.io postgresql aide chromium prometheus
BENCH_PACKAGES := $(TEST_PACKAGES) wrk hey haproxy nginx-light
PACKAGES ?= $(DEMO_PACKAGES)

.PHONY: demo test test-fast lint deps venv bench clean

deps:
	@missing=""; for p in $(PACKAGES); do \
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
	@$(MAKE) --no-print-directory deps PACKAGES="$(TEST_PACKAGES)"
	@scripts/ensure_docker.sh
	$(BIN)/pytest -q

test-fast: venv
	@$(MAKE) --no-print-directory deps PACKAGES="$(TEST_PACKAGES)"
	$(BIN)/pytest -q -n 4 -m "not docker and not browser and not slow and not swarm"

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

bench: venv
	@$(MAKE) --no-print-directory deps PACKAGES="$(BENCH_PACKAGES)"
	@scripts/ensure_docker.sh
	$(BIN)/python bench/rollout_local.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/rollout_swarm.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
