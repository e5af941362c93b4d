# Two commands do all the set-up on a fresh clone: `make up` and `make test`.
# Every package comes from uv.lock, with its hashes; uv itself is the one package installed
# before the lock is read (by pip, pinned by version and hash in infra/uv-requirements.txt).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
# a change of pyproject.toml or of the lock reinstalls
LOCKED := $(shell cat pyproject.toml uv.lock | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(LOCKED)
DATA   ?=
CLOUD  ?=
RUNTIME ?=
ARIMA  ?=
EVAL_STAMP := .venv-eval/.installed-$(LOCKED)
TRACES_STAMP := .venv-traces/.installed-$(LOCKED)
OBSERVE ?=
BENCH_SECONDS ?= 10
export BENCH_SECONDS
# the venvs use the machine's $(PYTHON): uv never downloads one of its own
export UV_PYTHON_DOWNLOADS := never
# --locked: a lock that no longer matches pyproject.toml is an error, never silently redone
SYNC := $(UV) sync --locked --quiet

.PHONY: install install-traces lock up test test-long test-bench test-observe test-unit lint evaluate bench bundle clean

$(UV): infra/uv-requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	  --only-binary :all: -r infra/uv-requirements.txt
	@touch $@

# Bytecode compiled at install: a function's cold start otherwise compiles every module it
# imports (where the packages are read-only, or PYTHONDONTWRITEBYTECODE is set, each time).
# Only here: the tests' throwaway environments would spend minutes compiling what never runs.
$(STAMP): pyproject.toml uv.lock $(UV)
	UV_COMPILE_BYTECODE=1 $(SYNC) --extra train --extra local --extra dev --extra gcp --extra aws --extra azure --extra lambda
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

## make install-traces: Phoenix, the trace store of `make up OBSERVE=1`, in .venv-traces
install-traces: $(TRACES_STAMP)

## make lock: uv.lock again after a pin in pyproject.toml changed (README, "The two commands")
lock: $(UV)
	$(UV) lock

## make up: the whole local stack (bucket, train, predict), trained and serving;
## CLOUD=aws or CLOUD=azure runs it on that cloud's local object store (default: gcp);
## RUNTIME=lambda runs both functions under the Lambda Runtime Interface Emulator;
## OBSERVE=1 also starts Prometheus (scraping every function's /metrics) and Phoenix (traces)
up: install $(if $(OBSERVE),$(TRACES_STAMP))
	$(if $(CLOUD),MILKPRICE_CLOUD=$(CLOUD)) $(if $(RUNTIME),MILKPRICE_RUNTIME=$(RUNTIME)) \
	  $(BIN)/milkprice up $(if $(DATA),--data $(DATA)) $(if $(OBSERVE),--observe)

## make test: the whole suite but the benchmark's smoke run, the local observability stack and
## the longest runs, on four workers (each test file stays on one worker, its servers with it;
## the tests mostly wait, so four fill two cores)
test: install $(EVAL_STAMP)
	$(BIN)/python -m pytest -n 4 --dist loadfile -m "not bench and not observe and not long" --durations=15

## make test-long: the longest runs (every candidate on the real data, the whole stack on the
## other clouds, ...), left out of make test; CI runs both
test-long: install $(EVAL_STAMP)
	$(BIN)/python -m pytest -n 4 --dist loadfile -m long --durations=10

## make test-bench: the benchmark's smoke run (make bench BENCH_SECONDS=1), checked; CI runs
## it after make test
test-bench: install
	$(BIN)/python -m pytest -m bench

## make test-observe: the local metrics and trace stack (Prometheus from Debian's package,
## Phoenix in .venv-traces) against real servers and `milkprice up --observe`; CI runs it too
test-observe: install $(TRACES_STAMP)
	$(BIN)/python -m pytest -m observe tests/integration/test_observe.py

## make test-unit: the quick part, no emulator and no server (tests/unit)
test-unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy milkprice functions tests

# statsforecast (the anchors of make evaluate) needs pandas < 3: it gets a venv of its own
# (the lock holds both sides: pyproject declares the two extras in conflict)
$(EVAL_STAMP): pyproject.toml uv.lock $(UV)
	@test -x .venv-eval/bin/python || $(PYTHON) -m venv .venv-eval
	UV_PROJECT_ENVIRONMENT=.venv-eval $(SYNC) --extra eval
	@rm -f .venv-eval/.installed-*; touch $@

# Phoenix, the trace store of `make up OBSERVE=1`, is heavy (a web app, its database, gRPC):
# a venv of its own, so nothing of it reaches the functions' venv, bundles or images
$(TRACES_STAMP): pyproject.toml uv.lock $(UV)
	@test -x .venv-traces/bin/python || $(PYTHON) -m venv .venv-traces
	UV_PROJECT_ENVIRONMENT=.venv-traces $(SYNC) --extra traces
	@rm -f .venv-traces/.installed-*; touch $@

## make evaluate: every candidate's backtest figures and the forecast path's per horizon,
## beside statsforecast's anchors (DATA=folder of the three CSVs; ARIMA=1 adds AutoARIMA)
evaluate: install $(EVAL_STAMP)
	$(BIN)/milkprice evaluate --anchors $(if $(ARIMA),--arima) $(if $(DATA),--data $(DATA))

## make bench: benchmarks (bench/README.md); BENCH_SECONDS=1 is the short smoke run
bench: install
	$(BIN)/python bench/run.py

## make bundle: deployable function source folders in dist/train and dist/predict
## (CLOUD=aws or azure: with that cloud's SDK instead of Cloud Storage's;
## CLOUD=aws RUNTIME=lambda: AWS Lambda zip packages, dist/*-lambda.zip and dist/aws-sdk-layer.zip)
bundle: install
	$(BIN)/python infra/bundle.py $(if $(CLOUD),--cloud $(CLOUD)) $(if $(RUNTIME),--runtime $(RUNTIME))

clean:
	rm -rf $(VENV) .venv-eval .venv-traces var dist .pytest_cache .mypy_cache .ruff_cache
