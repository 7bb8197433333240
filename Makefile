# Everyday targets. `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000
TRAIN_OUT     ?= weights/my-lstm  # where `make train` writes: a new directory, never a shipped model
TRAIN_MINUTES ?= 60               # its wall-clock limit, final evaluation included
SHOWN   := HOST PORT TRAIN_OUT TRAIN_MINUTES  # variables `make help` shows with their values

.PHONY: help setup lock image-test serve test lint data train publish-lstm evaluate results clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' \
	  | sed $(foreach v,$(SHOWN),-e 's|$$($(v))|$(strip $($(v)))|g')

$(BIN)/rnnlm: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(BIN)/rnnlm  ## create .venv and install rnnlm with its dev tools (runtime pinned by constraints.txt)

lock: setup  ## rewrite constraints.txt: the exact runtime dependency versions installed in .venv
	$(BIN)/python deploy/lock.py > constraints.txt.new && mv constraints.txt.new constraints.txt
	@touch $(BIN)/rnnlm  # the .venv is what the file pins: no reinstall

image-test: setup  ## build the container image, run it, check /health, /score, /generate, non-root, SIGTERM (minutes)
	bash deploy/image-test.sh

serve: setup  ## start the service on the shipped model (http://$(HOST):$(PORT))
	$(BIN)/rnnlm serve --host $(HOST) --port $(PORT)

test: setup  ## run the test suite (what CI runs)
	$(BIN)/python -m pytest

lint: setup  ## the gates CI runs before the tests: ruff check, ruff format --check, mypy, import-linter (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

data: setup  ## download People's Daily 1998 and write the benchmark split to data/pd98
	$(BIN)/rnnlm prepare-data pd98 --out data/pd98

.PHONY: data-domains
data-domains: data  ## the other two domains and the mix: data/reviews, data/docs (apt-get download), data/mix
	$(BIN)/rnnlm prepare-data reviews --out data/reviews
	$(BIN)/rnnlm prepare-data docs --out data/docs
	$(BIN)/rnnlm prepare-data mix --part data/pd98 --part data/reviews --part data/docs --out data/mix

# The shipped LSTM's recipe (docs/TRAINING.md, run f-rnn-d40: 6.4 minutes on an H100), sized for
# this machine by its time limit. It writes a new directory and refuses to write over one.
train: data  ## train the shipped LSTM recipe (rnnlm fit) into $(TRAIN_OUT) for $(TRAIN_MINUTES) min, evaluation included
	$(if $(wildcard $(strip $(TRAIN_OUT))),$(error $(strip $(TRAIN_OUT)) exists: `make train` never writes over a model; \
	  pick another TRAIN_OUT=weights/NAME, or delete it first))
	$(BIN)/rnnlm fit --data data/pd98 --out $(strip $(TRAIN_OUT)) --max-minutes $(strip $(TRAIN_MINUTES)) \
	  --model cell=lstm --model num_layers=2 --model emb_dim=512 --model hidden_dim=768 \
	  --model dropout=0.4 --model variational=true --model emb_dropout=0.1 --model tie_weights=true \
	  --batch-size 64 --bptt 128 --eval-every-tokens 2000000 --save-dtype float16 --seed 1234

publish-lstm: data  ## the deliberate step: replace the shipped weights/pd98-char-lstm with $(TRAIN_OUT) (evaluated here)
	$(BIN)/rnnlm publish $(strip $(TRAIN_OUT)) --to weights/pd98-char-lstm --data data/pd98
	@echo "weights/pd98-char-lstm replaced; \`make results\` refreshes docs/RESULTS.md"

evaluate: data  ## test perplexity of the shipped model
	$(BIN)/rnnlm evaluate weights/pd98-char-lstm --data data/pd98 --split test

results: data  ## docs/RESULTS.md: perplexity, reranking, size, time of every model (n-grams cached in runs/ngram)
	$(BIN)/rnnlm benchmark quality --data data/pd98 --out docs/RESULTS.md

.PHONY: task
task: data  ## the rescoring tasks' dev/test n-best files: runs/tasks/pinyin (CER) and runs/tasks/wordorder (about a minute)
	$(BIN)/rnnlm task pinyin --data data/pd98 --out runs/tasks/pinyin
	$(BIN)/rnnlm task wordorder --data data/pd98 --out runs/tasks/wordorder

clean:  ## remove caches (keeps .venv, data and weights)
	rm -rf .pytest_cache .ruff_cache build *.egg-info

BENCH_ARGS ?=

.PHONY: bench
# scoring, generation, http and precision measure the served default (weights/DEFAULT.json) and the
# plain LSTM side by side, in one run each (their tables end with the ratio)
bench: setup  ## run the benchmarks and rewrite docs/BENCHMARKS.md (minutes; needs an idle machine)
	$(BIN)/python -m rnnlm.bench.scoring $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.generation $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.http $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.cache $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.precision $(BENCH_ARGS)
	$(BIN)/python -m rnnlm.bench.ngram $(BENCH_ARGS)

.PHONY: reliability
reliability: setup  ## long fuzz + load runs; rewrite their results in docs/RELIABILITY.md (minutes; idle machine)
	$(BIN)/python -m rnnlm.bench.fuzz --examples 500
	$(BIN)/python -m rnnlm.bench.load --seconds 60
