# Two commands do all the set-up on a fresh clone: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DATA   ?=
CLOUD  ?=
ARIMA  ?=
EVAL_STAMP := .venv-eval/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BENCH_SECONDS ?= 10
export BENCH_SECONDS

.PHONY: install up test test-unit lint evaluate bench bundle clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,local,dev,aws,azure]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

## make up: the whole local stack (bucket, train, predict), trained and serving;
## CLOUD=aws or CLOUD=azure runs it on that cloud's local object store (default: gcp)
up: install
	$(if $(CLOUD),MILKPRICE_CLOUD=$(CLOUD)) $(BIN)/milkprice up $(if $(DATA),--data $(DATA))

## make test: the whole suite, against the real fake-gcs-server
test: install
	$(BIN)/python -m pytest

## make test-unit: the quick part, no emulator and no server (tests/unit)
test-unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy milkprice functions tests

# statsforecast (the anchors of make evaluate) needs pandas < 3: it gets a venv of its own
$(EVAL_STAMP): pyproject.toml
	@test -x .venv-eval/bin/python || $(PYTHON) -m venv .venv-eval
	.venv-eval/bin/python -m pip install --quiet --disable-pip-version-check -e '.[eval]'
	@rm -f .venv-eval/.installed-*; touch $@

## make evaluate: every candidate's backtest figures and the forecast path's per horizon,
## beside statsforecast's anchors (DATA=folder of the three CSVs; ARIMA=1 adds AutoARIMA)
evaluate: install $(EVAL_STAMP)
	$(BIN)/milkprice evaluate --anchors $(if $(ARIMA),--arima) $(if $(DATA),--data $(DATA))

## make bench: benchmarks (bench/README.md); BENCH_SECONDS=1 is the short smoke run
bench: install
	$(BIN)/python bench/run.py

## make bundle: deployable function source folders in dist/train and dist/predict
## (CLOUD=aws or azure: with that cloud's SDK instead of Cloud Storage's)
bundle: install
	$(BIN)/python infra/bundle.py $(if $(CLOUD),--cloud $(CLOUD))

clean:
	rm -rf $(VENV) .venv-eval var dist .pytest_cache .mypy_cache .ruff_cache
