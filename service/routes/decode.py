"""POST /decode: the best paths through a confusion network or an HTK lattice, searched with the model.

::

    {"slots": [[["我", -0.1], ["卧", -2.3]], …] | "lattice": "<SLF text>", "beam", "nbest", "lm_weight", …}
        ─▶ limits: slots, alternatives per slot, lattice arcs and text, beam (413 naming the field)
        ─▶ ModelRunner.decode: the word graph and its cost, planned in a worker thread (a bad
           lattice: 422 naming its line; past RNNLM_MAX_DECODE_COST: 413), then the search on the
           engine's worker (model.decoding.decode_graph), admitted at that cost
        ─▶ {"model", "results": [{"text", "words", "score", "lm_logprob", "acoustic", "num_tokens"}, …],
            "search": {"cost", "steps", "stepped_rows", "merged", "expansions"}}

A path's total is the rescoring formula: acoustic + lm_weight × lm_logprob + length_bonus × tokens,
and its ``lm_logprob`` is what /score gives its text. Exactly one of ``slots`` and ``lattice`` (else
422); a backward model cannot search left to right (422 naming ``model``). The request's deadline
(RNNLM_REQUEST_TIMEOUT_S) or a client gone stops the search between two of its levels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends

from model.decoding import WordGraph, cn_graph, lattice_graph, parse_confusion_network, parse_slf

from ..deps import OffLoopBodyRoute, RegistryDep, SettingsDep, within_limits
from ..errors import ERROR_RESPONSES, too_large
from ..limits import env_name
from ..runner import Decoded
from ..schemas import DecodedResult, DecodeRequest, DecodeResponse, DecodeSearch
from ..settings import Settings

router = APIRouter(tags=["model"], route_class=OffLoopBodyRoute)
DecodeBody = Annotated[DecodeRequest, Depends(within_limits(DecodeRequest))]


@router.post(
    "/decode",
    summary="The best paths through a confusion network or a lattice, searched with the model",
    responses=ERROR_RESPONSES,
    response_model=DecodeResponse,
)
async def decode(body: DecodeBody, registry: RegistryDep, settings: SettingsDep) -> DecodeResponse:
    runner = registry.get(body.model)
    check_alternatives(body, settings)
    field = "slots" if body.slots is not None else "lattice"
    found = await runner.decode(
        graph_builder(body, settings), field, body.options(), settings.max_decode_cost
    )
    return answer(runner.name, found)


def check_alternatives(body: DecodeRequest, settings: Settings) -> None:
    """413 naming ``slots.i``, the first slot with more alternatives than RNNLM_MAX_DECODE_ALTERNATIVES."""
    cap = settings.max_decode_alternatives
    for i, slot in enumerate(body.slots or []):
        if len(slot) > cap:
            raise too_large(
                f"slots.{i}",
                f"{len(slot)} alternatives is more than the limit of {cap} ({env_name('max_decode_alternatives')})",
            )


def graph_builder(body: DecodeRequest, settings: Settings) -> Callable[[], WordGraph]:
    """What builds the request's word graph (the runner calls it in a worker thread): the library's
    parsers, whose ValueErrors name the slot or the lattice's line; a lattice of more arcs than
    RNNLM_MAX_DECODE_ARCS is a 413 naming ``lattice``."""
    if body.slots is not None:
        slots = body.slots
        return lambda: cn_graph(parse_confusion_network(slots))
    cap = settings.max_decode_arcs

    def lattice() -> WordGraph:
        parsed = parse_slf(body.lattice or "")
        if len(parsed.arcs) > cap:
            raise too_large(
                "lattice",
                f"{len(parsed.arcs)} arcs is more than the limit of {cap} ({env_name('max_decode_arcs')})",
            )
        return lattice_graph(parsed, body.acoustic_scale, body.lattice_lm_weight)

    return lattice


def answer(model: str, found: Decoded) -> DecodeResponse:
    stats = found.stats
    return DecodeResponse(
        model=model,
        results=[
            DecodedResult(
                text=p.text,
                words=p.words,
                score=p.score,
                lm_logprob=p.lm_logprob,
                acoustic=p.acoustic,
                num_tokens=p.num_tokens,
            )
            for p in found.paths
        ],
        search=DecodeSearch(
            cost=found.cost,
            steps=stats.steps,
            stepped_rows=stats.stepped_rows,
            merged=stats.merged,
            expansions=stats.expansions,
        ),
    )
