#!/usr/bin/env bash
# The GPU sweep behind docs/TRAINING.md, as run on a lent H100 (device tool): a 10-second smoke
# run of each kind, then every run of the plan side by side on the one GPU, then the logs and the
# best checkpoint of each final group packed into $OUT.  Needs data/pd98 (rnnlm prepare-data pd98).
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-runs/gpu-out}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, numpy, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m rnnlm.sweep run docs/training/pd98-gpu-smoke.json --root /tmp/smoke --deadline-s 90
if python3 - <<'PY'
import json, sys
s = json.load(open("/tmp/smoke/summary.json"))
bad = [k for k, v in s.items() if v["returncode"] != 0 or not v["best_valid"]]
print("smoke failures:", bad)
sys.exit(1 if bad else 0)
PY
then :; else
  for f in /tmp/smoke/*/stdout.txt; do echo "== $f"; tail -25 "$f"; done
  exit 1
fi
python3 -m rnnlm.sweep run docs/training/pd98-gpu-plan.json --root /tmp/sweep --deadline-s "${SWEEP_DEADLINE_S:-450}"
python3 -m rnnlm.sweep pack /tmp/sweep --out "$OUT" --groups final-rnn final-hybrid
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
ls -la "$OUT"
