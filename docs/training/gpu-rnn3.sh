#!/usr/bin/env bash
# Third GPU step (issue 11: the RNN alone against the 5-gram on word order): five RNN runs side by
# side on one GPU (plan: docs/training/pd98-gpu-rnn3-plan.json), then each run's best checkpoint
# scored on the *valid* reranking sets, and the checkpoint with the best valid mean top-1 packed
# into $OUT (with the lowest-valid-perplexity one when both fit).  Needs data/pd98 and the two
# valid sets in $SETS (rnnlm benchmark rerank --split valid writes them to runs/rerank).
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
OUT=${OUT:-runs/gpu-out}
SETS=${SETS:-runs/rerank}
ROOT=${ROOT:-/tmp/sweep3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m rnnlm.sweep run "${PLAN:-docs/training/pd98-gpu-rnn3-plan.json}" --root "$ROOT" --deadline-s "${SWEEP_DEADLINE_S:-420}"
for run in "$ROOT"/*/; do
  [ -f "$run/model/model.safetensors" ] || continue
  for set in homophone wordorder; do
    python3 -m rnnlm.cli benchmark rerank --model "$run/model" --items "$SETS/$set-valid-n500-d5-s0.jsonl" \
      --device "${RERANK_DEVICE:-cuda}" > "$run/rerank-$set.json" 2> "$run/rerank-$set.err" || tail -3 "$run/rerank-$set.err"
  done
done
python3 - "$ROOT" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from rnnlm.sweep import pack

root, out = Path(sys.argv[1]), sys.argv[2]
summary = json.loads((root / "summary.json").read_text())
rows = {}
for name, s in summary.items():
    top1 = {}
    for kind in ("homophone", "wordorder"):
        f = root / name / f"rerank-{kind}.json"
        try:
            top1[kind] = next(iter(v for v in json.loads(f.read_text()).values() if isinstance(v, dict)))["top1"]
        except Exception:
            top1[kind] = None
    s["valid_rerank"] = top1
    if None not in top1.values() and s["best_valid"]:
        rows[name] = (sum(top1.values()) / 2, top1["wordorder"], -s["best_valid"])
    print(name, s["best_valid"], top1, flush=True)
by_rerank = max(rows, key=rows.get)
by_ppl = max(rows, key=lambda k: rows[k][2])
size = lambda k: (root / k / "model" / "model.safetensors").stat().st_size
chosen = [by_rerank] + ([by_ppl] if by_ppl != by_rerank and size(by_rerank) + size(by_ppl) < 58 << 20 else [])
print("chosen on valid:", chosen, flush=True)
for i, name in enumerate(chosen):  # pack() takes the best run of each group: one group per chosen run
    summary[name]["group"] = f"chosen-{i}"
(root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
pack(str(root), out, [f"chosen-{i}" for i in range(len(chosen))])
PY
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
ls -la "$OUT"
