"""Rescoring n-best lists with one or more language models (``rnnlm rescore``, ``tune``, ``rescoring-report``).

formats: readers and writers (JSONL, Kaldi, fairseq-generate, NeMo); combine: the weights file and
an n-best rescored with it (the formula itself is :mod:`model.inference.formula`, shared with
``POST /score``); score: each model scores each distinct text once; errors: CER, WER,
accuracy; tune: the weight search on a dev set. Nothing here imports the web stack.
"""
