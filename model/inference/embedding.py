"""A text's vector from a language model's hidden states (the seeds' text classification input).

::

    texts ─▶ tokenizer ─▶ ids (no <bos>) ─▶ lm.embed(ids, pooling) ─▶ (N, D) ─▶ Embeddings

:func:`embed_texts` runs the model directly (a script, a notebook, the CLI);
:func:`model.inference.engine.text.embed_with_engine` does the same through the serving engine,
batched with concurrent requests. Both tokenize with :func:`encode_texts` and answer
:class:`Embeddings`. The poolings (``last``, ``mean``) are defined by the model interface
(:meth:`model.models.lm.RecurrentLanguageModel.embed`); a kind without hidden states raises
:class:`~model.models.lm.NoHiddenStates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from model.models.lm import LanguageModel
from model.text.tokenizer import Tokenizer


@dataclass
class Embeddings:
    vectors: Tensor  # (N, D) float32 on the CPU, one row per text, in input order
    tokens: list[int]  # each text's tokens as the model read them (without <bos>)
    pooling: str  # "last" | "mean"
    normalized: bool  # each row has unit L2 norm

    @property
    def dim(self) -> int:
        return self.vectors.size(1)


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text's ids in the model's reading order, without ``<bos>`` (``embed`` adds it)."""
    return [tokenizer.encode(text).ids for text in texts]


def embed_texts(
    lm: LanguageModel, texts: Sequence[str], pooling: str = "last", normalize: bool = False
) -> Embeddings:
    """Each text's vector from ``lm`` (see :meth:`LanguageModel.embed`)."""
    lm.embedding_dim  # noqa: B018  (NoHiddenStates before anything is tokenized)
    ids = encode_texts(lm.tokenizer, texts)
    vectors = lm.embed(ids, pooling, normalize)
    return Embeddings(vectors, [len(s) for s in ids], pooling, normalize)
