# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATASET ?= indian_pines
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MPLBACKEND := Agg

.PHONY: run test test-all bench bench-quick bench-avx2 benchmarks viz demo-data clean-venv browser airflow-dag

run: $(STAMP) demo-data
	$(BIN)/kedro run --pipeline mae_pretrain --params dataset=$(DATASET)

demo-data: $(STAMP)
	@if [ ! -d data/01_raw/indian_pines ]; then $(BIN)/kedro run --pipeline demo_data; fi

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow

# Every benchmark, each figure beside its baseline in the same run, into benchmarks/RESULTS.md (and
# benchmarks/results/*.json). The full run trains models for a long time; bench-quick leaves out the
# slow modules (bench_learning, bench_unet*) and takes a few minutes. CI runs neither.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --skip-slow $(BENCH_ARGS)

# The quick benchmarks again with torch, oneDNN, MKL and numpy capped at AVX2 (the AVX2 kind's kernels on
# an AVX-512 CPU), into benchmarks/RESULTS-avx2.md and benchmarks/results-avx2/.
bench-avx2: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --emulate-avx2 --skip-slow $(BENCH_ARGS)

benchmarks: bench

viz: $(STAMP)
	$(BIN)/kedro viz run --host 127.0.0.1

# The Airflow DAG of mae_pretrain (kedro-airflow, settings in conf/base/airflow.yml), committed in airflow_dags/.
airflow-dag: $(STAMP)
	$(BIN)/kedro airflow create --pipelines mae_pretrain --group-by memory --target-dir airflow_dags

# Headless Chromium for the `kedro viz` page test (tests/pipelines/test_viz.py): Debian's chromium
# package, installed here and never from inside a test. .ci/run calls it before `make test`.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "browser: $$(command -v chromium) is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -o DPkg::Lock::Timeout=120 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120 chromium; \
	else echo "browser: install Debian's chromium package as root (apt-get install chromium)" >&2; exit 1; fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
