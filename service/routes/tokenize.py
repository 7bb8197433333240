"""POST /tokenize and /detokenize (as llama.cpp and vLLM name them), GET /tokenizer_info (vLLM's).

::

    POST /tokenize {"prompt": "天气😀"}   ─▶ {"tokens": [17, 52, 1], "count": 3, "oov": 1, "pieces": [
                                              {"id": 1, "piece": "<unk>", "text": "😀", "start": 2, "end": 3}, …]}
    POST /detokenize {"tokens": [17, 52, 1]} ─▶ {"prompt": "天气\\ufffd", "content": "天气\\ufffd"}

Offsets count characters (code points); a backward model's ids run from the text's end, each
piece with its own place in the text, and its ids read back as the text in reading order
(service/tokens.py). lm-evaluation-harness's remote tokenizer (its
``tokenizer_backend=remote``) reads /tokenizer_info and calls these two. Like the /v1 routes they
follow their owners' protocols, so /docs does not list them (docs/API.md does).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from model.text.tokenizer import BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, UNK, UNK_ID

from ..compat_schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    TokenPiece,
)
from ..deps import RegistryDep, within_limits
from ..errors import invalid
from ..tokens import ids_to_text, piece_starts

# guarded and limited like the model routes, but they run no model: no admission slot, so a flood
# of them never refuses a model's own requests (service/app.py)
router = APIRouter(tags=["tokenizer"])
info_router = APIRouter(tags=["tokenizer"])

TokenizeBody = Annotated[TokenizeRequest, Depends(within_limits(TokenizeRequest))]
DetokenizeBody = Annotated[DetokenizeRequest, Depends(within_limits(DetokenizeRequest))]


@router.post("/tokenize", include_in_schema=False)
async def tokenize(body: TokenizeBody, registry: RegistryDep) -> TokenizeResponse:
    runner = registry.get(body.model)
    tok = runner.lm.tokenizer
    enc = tok.encode(body.prompt)
    starts = piece_starts(body.prompt, enc.tokens, tok.backward)
    pieces = [
        TokenPiece(id=i, piece=tok.piece(i), text=text, start=start, end=start + len(text))
        for i, text, start in zip(enc.ids, enc.tokens, starts, strict=True)
    ]
    if body.add_special_tokens:
        pieces.insert(0, TokenPiece(id=BOS_ID, piece=BOS, text="", start=0, end=0))
    return TokenizeResponse(
        model=runner.name, tokens=[p.id for p in pieces], count=len(pieces), pieces=pieces, oov=enc.oov
    )


@router.post("/detokenize", include_in_schema=False)
async def detokenize(body: DetokenizeBody, registry: RegistryDep) -> DetokenizeResponse:
    runner = registry.get(body.model)
    tok = runner.lm.tokenizer
    for j, token_id in enumerate(body.tokens):
        if token_id >= tok.vocab_size:
            raise invalid(
                f"tokens.{j}", f"token id {token_id} is outside the vocabulary [0, {tok.vocab_size})"
            )
    text, _ = ids_to_text(tok, body.tokens)
    return DetokenizeResponse(model=runner.name, prompt=text, content=text)


@info_router.get("/tokenizer_info", include_in_schema=False)
async def tokenizer_info(registry: RegistryDep, model: str | None = None) -> TokenizerInfo:
    """The special tokens, as vLLM describes them (the text "<eos>" is still text to /tokenize)."""
    runner = registry.get(model)
    tok = runner.lm.tokenizer
    return TokenizerInfo(
        model=runner.name,
        tokenizer_class=tok.kind,
        vocab_size=tok.vocab_size,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        unk_token_id=UNK_ID,
    )
