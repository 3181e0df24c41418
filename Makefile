# The two commands a newcomer runs: `make demo` and `make test`.
# Each installs what is missing into .venv (a project-local virtual environment).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
DEMO_OUT ?= demo-out
DEMO_CLASSES ?= red circle,blue square,green triangle,yellow star,red triangle,blue star,green circle,yellow square

.PHONY: demo demo-model test install bench clean help

help:
	@echo "make demo   - install if needed, then generate a small dataset offline (bundled shapes-demo model)"
	@echo "make test   - install if needed, then run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make demo-model - retrain the shapes-demo model from scratch (under an hour on two CPU cores)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# make test: the package with every extra the suite exercises (ray, s3, learner) and the test tools.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,ray,s3,learner]"
	@touch $(STAMP) $(DEMO_STAMP)

# make demo: only what `generate` needs (no Ray, no browser, no S3 server, no test tools).
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e "."
	@touch $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dalle-data generate --model shapes-demo \
		--classes "$(DEMO_CLASSES)" --per-class 8 --mode vanilla=0.75,style=0.25 \
		--format parquet --format imagefolder --out $(DEMO_OUT)
	@echo
	@echo "Dataset written to $(DEMO_OUT)/ (spec.yaml, labels.json, summary.json, parquet/, imagefolder/, manifest.jsonl, README.md: its card)."
	@echo "See it:      open $(DEMO_OUT)/report/index.html   (counts, score histograms, image grids, diversity, near-duplicates)"
	@echo "Look at it:  ls $(DEMO_OUT)/imagefolder/train/*   (32x32 PNGs of coloured shapes, one folder per class)"
	@echo "Load it:     $(BIN)/python -c \"import datasets; print(datasets.load_dataset('parquet', data_dir='$(DEMO_OUT)/parquet'))\""
	@echo "Review it:   $(BIN)/dalle-data review $(DEMO_OUT) --smallest-margin 16   (the likeliest wrong-class images first)"
	@echo "Check it:    $(BIN)/dalle-data verify $(DEMO_OUT)"

test: $(STAMP)
	@# The review page's browser test drives Debian's chromium (never `playwright install`); as root, install it if missing.
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "could not install chromium; the browser test will be skipped"; fi
	@# Two workers, a test file each at a time (module fixtures stay in one process), one torch thread each:
	@# two cores, no oversubscription (OpenMP threads spinning against each other made tests several times slower).
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/resume.py
	$(BIN)/python benchmarks/modes.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/analysis.py
	$(BIN)/python benchmarks/review_orderings.py
	$(BIN)/python benchmarks/backends.py
	$(BIN)/python benchmarks/usefulness.py

# Deterministic (seeded) training of the bundled offline model; see dalle_data/demo/train.py.
demo-model: $(STAMP)
	rm -rf models/shapes-demo/.stages
	$(BIN)/python -m dalle_data.demo.train models/shapes-demo

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
