# The two commands a newcomer runs: `make demo` and `make test`.
# Each installs what is missing into .venv (a project-local virtual environment).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-out

.PHONY: demo test install bench clean help

help:
	@echo "make demo   - install if needed, then generate a small dataset offline (tiny model)"
	@echo "make test   - install if needed, then run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dalle-data generate --model tiny --classes "dalmatian,golden retriever,tabby cat" \
		--per-class 8 --mode vanilla=0.75,adversarial=0.25 --format parquet --format imagefolder \
		--filter none --out $(DEMO_OUT)
	@echo
	@echo "Dataset written to $(DEMO_OUT)/ (spec.yaml, summary.json, parquet/, imagefolder/, manifest.jsonl)."
	@echo "Open it:  $(BIN)/python -c \"import datasets; print(datasets.load_dataset('parquet', data_dir='$(DEMO_OUT)/parquet'))\""
	@echo "The tiny preset has random weights: its images are noise; it exercises the real pipeline offline."

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
