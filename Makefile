# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test serve browser lint format bench clean

# Re-install only when the project's dependencies change; fast when the venv is already there.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/keymodels demo --out runs/demo

# The browser test drives Debian's chromium through its chromedriver; nothing is downloaded
# at test time. Without them (no root, no apt) the browser test fails and says how to get them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (Debian packages) for tests/test_serve_browser.py"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; } || \
	  echo "!! could not install chromium: the browser test will fail (KEYMODELS_SKIP_BROWSER=1 skips it)"

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

# Explore the demo's runs in the browser (after `make demo`).
serve: $(STAMP)
	$(BIN)/keymodels serve runs/demo/vit-digits runs/demo/seq2seq/attention

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_vit.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
