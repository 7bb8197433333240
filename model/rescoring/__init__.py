"""Rescoring n-best lists with one or more language models (``rnnlm rescore``, ``tune``, ``rescoring-report``).

formats: readers and writers (JSONL, Kaldi, fairseq-generate, NeMo); combine: the formula, length
units and the weights file; score: each model scores each distinct text once; errors: CER, WER,
accuracy; tune: the weight search on a dev set. Nothing here imports the web stack.
"""
