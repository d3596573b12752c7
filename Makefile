# Two commands do everything (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results/demo

.PHONY: demo test test-portable bench lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/diffeosense demo --out $(OUT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# The suite again on the generic CPU kernels and one thread: a test that depends on the
# machine's kernels or thread count (float summation order) fails here (CI runs both).
test-portable: $(BIN)/.installed
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks

bench: $(BIN)/.installed
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done
