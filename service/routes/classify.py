"""POST /classify: each text's label and its probability, from a served classifier.

::

    {"texts": [...], "model": a classifier's name (optional)}
        ─▶ limits: texts ≤ RNNLM_MAX_BATCH_TEXTS, each ≤ RNNLM_MAX_TEXT_CHARS characters (413 naming
           `texts` / `texts.i`); their characters together ≤ RNNLM_MAX_REQUEST_TOKENS (413 `texts`)
        ─▶ ModelRegistry.head(model, "classifier"): none served, or no such name: 404 naming `model`;
           a language model or a head of another kind: 422 naming `model`
        ─▶ HeadRunner.classify on the classifier's own thread (service/heads.py: admitted, with a deadline)
        ─▶ {"model", "results": [{"label", "probability", "probabilities": {label: p, …}}, …]}

The label is the most probable one (model.heads.classifier.class_probabilities, as classify_texts
picks it). A request holds one admission slot of its classifier (routes/head_router.py), as /tag does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from model.heads.classifier import MODEL_TYPE as CLASSIFIER

from ..deps import RegistryDep, within_limits
from ..errors import ERROR_RESPONSES
from ..heads import Classified
from ..schemas import ClassifyRequest, ClassifyResponse, ClassifyResult
from .head_router import head_router

router = head_router(CLASSIFIER)
ClassifyBody = Annotated[ClassifyRequest, Depends(within_limits(ClassifyRequest))]


@router.post(
    "/classify",
    summary="Each text's label and its probability (a served classifier: sentiment)",
    responses=ERROR_RESPONSES,
    response_model=ClassifyResponse,
)
async def classify(body: ClassifyBody, registry: RegistryDep) -> ClassifyResponse:
    head = registry.head(body.model, CLASSIFIER)
    found = await head.classify(body.texts)
    return ClassifyResponse(model=head.name, results=[answer(c) for c in found])


def answer(found: Classified) -> ClassifyResult:
    return ClassifyResult(label=found.label, probability=found.probability, probabilities=found.probabilities)
