"""POST /tag: each text's words with their part-of-speech tags and spans, from a served tagger.

::

    {"texts": [...], "model": a tagger's name (optional)}
        ─▶ limits: texts ≤ RNNLM_MAX_BATCH_TEXTS, each ≤ RNNLM_MAX_TEXT_CHARS characters (413 naming
           `texts` / `texts.i`); their characters together ≤ RNNLM_MAX_REQUEST_TOKENS (413 `texts`)
        ─▶ ModelRegistry.head(model, "tagger"): none served, or no such name: 404 naming `model`; a
           language model or a head of another kind: 422 naming `model`
        ─▶ HeadRunner.tag on the tagger's own thread (service/heads.py: admitted, with a deadline)
        ─▶ {"model", "results": [{"words": [{"word", "tag", "start", "end"}, …]}, …]}

Whitespace separates words and belongs to none (model.heads.tagger.tag_spaced_texts); an empty
text has no words. A request holds one admission slot of its tagger (RNNLM_MAX_IN_FLIGHT, counted
by the head's name, apart from the language models' slots).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from model.heads.tagger import MODEL_TYPE as TAGGER
from model.text.tagged import TaggedWord

from ..deps import RegistryDep, within_limits
from ..errors import ERROR_RESPONSES
from ..schemas import TaggedWordItem, TagRequest, TagResponse, TagResult
from .head_router import head_router

router = head_router(TAGGER)  # a request holds a slot of its tagger (routes/head_router.py)
TagBody = Annotated[TagRequest, Depends(within_limits(TagRequest))]


@router.post(
    "/tag",
    summary="Each text's words with their part-of-speech tags and character spans (a served tagger)",
    responses=ERROR_RESPONSES,
    response_model=TagResponse,
)
async def tag(body: TagBody, registry: RegistryDep) -> TagResponse:
    head = registry.head(body.model, TAGGER)
    found = await head.tag(body.texts)
    return TagResponse(model=head.name, results=[answer(words) for words in found])


def answer(words: list[TaggedWord]) -> TagResult:
    return TagResult(words=[TaggedWordItem(word=w.text, tag=w.tag, start=w.start, end=w.end) for w in words])
