# scep-server — two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/dev.yaml
BIND ?= 127.0.0.1:8080
STAMP := $(VENV)/.installed

.PHONY: run test lint deps system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

system-deps:
	bash .ci/install-deps.sh

# The server on embedded defaults (SQLite, a dev CA under ./var) with the Intune emulator beside it.
run: $(STAMP)
	SCEP_CHALLENGE=$${SCEP_CHALLENGE:-dev-challenge} $(BIN)/scep-server --config $(CONFIG) \
		serve --init-if-missing --with-emulator --bind $(BIND)

test: $(STAMP) system-deps
	bash .ci/start-postgres.sh
	$(BIN)/ruff check scep_server tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check scep_server tests bench
	$(BIN)/mypy

bench: $(STAMP) system-deps
	$(BIN)/python bench/enroll.py

clean:
	rm -rf $(VENV) var build *.egg-info
