"""Score the everyday sentence pairs of docs/TRAINING.md with each shipped model (first = correct)."""

from model.models.loading import load_model
from model.text.batching import with_boundaries

pairs = [
    ("厨房里食油用完了", "厨房里石油用完了"),
    ("你先走", "你走先"),
    ("我们明天去公园散步", "我们明天去公园散布"),
    ("他在银行工作", "他在银行公作"),
    ("请把门关上", "请把门关商"),
    ("今天天气很好", "今天天汽很好"),
]
for d in ["weights/pd98-char-kn5", "weights/pd98-char-lstm", "weights/pd98-char-hybrid"]:
    lm = load_model(d)
    wins = 0
    out = []
    for a, b in pairs:
        s = [
            float(x.sum())
            for x in lm.sequence_logprobs([with_boundaries(lm.tokenizer.encode(t).ids) for t in (a, b)])
        ]
        wins += s[0] > s[1]
        out.append(f"{s[0] - s[1]:+.2f}")
    print(d, wins, "/", len(pairs), out)
