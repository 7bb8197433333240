"""N-gram language models: counts, the textbook smoothing family, and the backoff tables they
compile to, behind the same :class:`~model.models.lm.LanguageModel` interface as the RNN.

::

    sentences ─▶ counts.py (every order, sorted numpy tables)
                     ─▶ smoothing.py (addk | interp | katz | kn) ─▶ tables.py (backoff form = ARPA)
                                                                      ─▶ model.py (LanguageModel)
    store.py: checkpoint directories (safetensors)      train.py: `rnnlm train-ngram`
    ../arpa.py: ARPA files in and out (KenLM, SRILM)
"""

from model.models.ngram.counts import NGramCounts, count_ngrams
from model.models.ngram.model import NGramLanguageModel, build_ngram
from model.models.ngram.smoothing import SMOOTHERS
from model.models.ngram.store import load_ngram, save_ngram
from model.models.ngram.tables import BackoffTables

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
