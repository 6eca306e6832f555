# scep-server — two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/dev.yaml
BIND ?= 127.0.0.1:8080
STAMP := $(VENV)/.installed

.PHONY: run test lint audit lock deps system-deps bench fuzz clean

# constraints.txt pins every package (direct and transitive) to the set the tests ran on.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

system-deps:
	bash .ci/install-deps.sh

# The server on embedded defaults (SQLite, a dev CA under ./var) with the Intune emulator beside it.
run: $(STAMP)
	SCEP_CHALLENGE=$${SCEP_CHALLENGE:-dev-challenge} $(BIN)/scep-server --config $(CONFIG) \
		serve --init-if-missing --with-emulator --bind $(BIND)

test: $(STAMP) system-deps audit
	bash .ci/start-postgres.sh
	$(BIN)/ruff check scep_server tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check scep_server tests bench
	$(BIN)/mypy

# Known vulnerabilities in the locked set fail the build.
audit: $(STAMP)
	$(BIN)/python .ci/audit.py constraints.txt

# Re-resolve the newest allowed versions in a scratch venv and pin them.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# The tested dependency set: \`make\` installs with -c constraints.txt; \`make lock\` refreshes it."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt
	rm -rf .lock-venv

# One table of throughput figures (bench/README.md); e.g. make bench BENCH_ARGS="--duration 20 --scale".
BENCH_ARGS ?=
bench: $(STAMP) system-deps
	bash .ci/start-postgres.sh || echo "bench: no PostgreSQL, its row will say skipped"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Every fuzz target for FUZZ_SECONDS under atheris; findings land in var/fuzz/TARGET (fuzz/README.md).
FUZZ_TARGETS ?= envelope_raw envelope_attributes envelope_pkcs envelope_content ocsp_request
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?= --keep-going
fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install --quiet -c constraints.txt -e '.[dev,fuzz]'
	for target in $(FUZZ_TARGETS); do \
		nice -n 10 $(BIN)/python -m fuzz.run $$target -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS) || exit 1; \
		cat var/fuzz/$$target/findings/summary.txt 2>/dev/null || true; \
	done

clean:
	rm -rf $(VENV) var build *.egg-info
