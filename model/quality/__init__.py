"""Quality benchmarks: confusion sets for n-best reranking, their scoring, and the error analysis.

* :mod:`.confusion` builds the sets (homophone swaps for ASR, adjacent swaps for word order).
* :mod:`.english_sets` builds English ones from a word-level split (real-word errors, word swaps).
* :mod:`.rerank` scores every candidate with a :class:`~model.models.lm.LanguageModel` and reports
  top-1 accuracy and mean reciprocal rank with bootstrap confidence intervals.
* :mod:`.analysis` breaks the comparison of two models down by position and by frequency.
"""
