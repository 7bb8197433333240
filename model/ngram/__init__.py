"""N-gram language models: counts, the textbook smoothing family, and the backoff tables they
compile to, behind the same :class:`~model.lm.LanguageModel` interface as the RNN.

::

    sentences ─▶ counts.py (every order, sorted numpy tables)
                     ─▶ smoothing.py (addk | interp | katz | kn) ─▶ tables.py (backoff form = ARPA)
                                                                      ─▶ model.py (LanguageModel)
    store.py: checkpoint directories (safetensors)      train.py: `rnnlm train-ngram`
    ../arpa.py: ARPA files in and out (KenLM, SRILM)
"""

from .counts import NGramCounts, count_ngrams
from .model import NGramLanguageModel, build_ngram
from .smoothing import SMOOTHERS
from .store import load_ngram, save_ngram
from .tables import BackoffTables

__all__ = [
    "SMOOTHERS",
    "BackoffTables",
    "NGramCounts",
    "NGramLanguageModel",
    "build_ngram",
    "count_ngrams",
    "load_ngram",
    "save_ngram",
]
