#!/usr/bin/env bash
# Second GPU step: the hybrid started from the best RNN of the first sweep (its RNN taken over,
# β = 1), trained jointly with the held-out-fold n-gram. Needs data/pd98 and runs/gpu1/f-rnn-d40/model.
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
OUT=${OUT:-runs/gpu-out}
python3 -m rnnlm.sweep run docs/training/pd98-gpu-hybrid-plan.json --root /tmp/sweep2 --deadline-s "${SWEEP_DEADLINE_S:-215}"
python3 -m rnnlm.sweep pack /tmp/sweep2 --out "$OUT" --groups final-hybrid-2
