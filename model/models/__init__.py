"""The language models behind one interface (:class:`model.models.lm.LanguageModel`).

The RNN (``network``, ``lm``), the hybrid over a Kneser-Ney n-gram (``hybrid``), Bengio's window
model (``window``), the n-gram itself (``ngram/``) and mixtures of any of them (``mixture``); how
each is stored and opened (``checkpoint``, ``loading``), the prefix-shared passes they score with
(``prefix``, ``state_cache``, ``positions``), their numerics (``precision``, ``device``) and the
one perplexity every model is measured by (``evaluate``). Imports ``model.text`` only.
"""
