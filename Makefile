# Everyday targets. `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: help setup serve test lint data train evaluate results clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/rnnlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/rnnlm  ## create .venv and install rnnlm with its dev tools

serve: setup  ## start the service on the shipped model (http://$(HOST):$(PORT))
	$(BIN)/rnnlm serve --host $(HOST) --port $(PORT)

test: setup  ## run the test suite (what CI runs)
	$(BIN)/python -m pytest

lint: setup  ## the gates CI runs before the tests: ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

data: setup  ## download People's Daily 1998 and write the benchmark split to data/pd98
	$(BIN)/rnnlm prepare-data pd98 --out data/pd98

train: data  ## retrain the shipped model from scratch (2.5 hours on 2 CPU cores)
	$(BIN)/rnnlm train --data data/pd98 --out weights/pd98-char-lstm --no-resume \
	  --cell lstm --num-layers 2 --emb-dim 512 --hidden-dim 512 --dropout 0.25 --tie-weights true \
	  --epochs 40 --max-minutes 147 --batch-size 128 --bptt 64 --lr 2.5e-3 --weight-decay 0.05 \
	  --warmup-steps 150 --clip 0.5 --eval-every 250 --patience 4 --seed 1234

evaluate: data  ## test perplexity of the shipped model
	$(BIN)/rnnlm evaluate weights/pd98-char-lstm --data data/pd98 --split test

results: data  ## docs/RESULTS.md: perplexity, reranking, size, time of every model (n-grams cached in runs/ngram)
	$(BIN)/rnnlm benchmark quality --data data/pd98 --out docs/RESULTS.md

clean:  ## remove caches (keeps .venv, data and weights)
	rm -rf .pytest_cache .ruff_cache build *.egg-info

BENCH_ARGS ?=

.PHONY: bench
bench: setup  ## run the benchmarks and rewrite docs/BENCHMARKS.md (minutes; needs an idle machine)
	$(BIN)/python -m rnnlm.bench.scoring $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.generation $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.http $(BENCH_ARGS)

.PHONY: reliability
reliability: setup  ## long fuzz + load runs; rewrite their results in docs/RELIABILITY.md (minutes; idle machine)
	$(BIN)/python -m rnnlm.bench.fuzz --examples 500
	$(BIN)/python -m rnnlm.bench.load --seconds 60
