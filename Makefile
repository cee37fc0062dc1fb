# Two commands on a fresh machine:
#   make demo   set up .venv, then synth -> cache -> data report -> demo campaign -> results
#               report -> export -> whole-night detection, on the embedded synthetic dataset
#   make test   set up .venv with the test extras, lint, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SS := $(BIN)/sleepsound
DATA ?= data/synthetic
NIGHT ?= data/synthetic-night
CACHE ?= results/cache/spectrograms

.PHONY: demo test install lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(SS) synth --out $(DATA) --seed 0
	$(SS) preprocess --data $(DATA) --cache-dir $(CACHE) --skip-existing
	$(SS) report data --cache-dir $(CACHE)
	$(SS) campaign --manifest experiments/demo.json --resume
	$(SS) leaderboard
	$(SS) report results
	$(SS) export --run best-student --int8
	$(SS) synth --night 0.25 --out $(NIGHT) --seed 1
	$(SS) detect $(NIGHT)/night.wav --model best-student --truth $(NIGHT)/events.csv --out results/detect
	@echo "Look at: results/report.md, results/figures/, results/leaderboard.csv, results/detect/"

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/preprocess_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf results $(DATA) $(NIGHT)
