"""What POST /score does: which models score (``weights``, ``direction``), how their log-probs
combine, and the ``sweep`` of many weight pairs over one scoring pass. The route goes down once::

    body ─▶ plan_scoring ─▶ ScoringPlan ─▶ run_plan: refused by cost (413 / 503) before any text is
            (every 4xx naming               tokenized, then each model scores every candidate once
            the field)                      (concurrently, through its runner), the totals of
                                            model.inference.formula, the sweep ─▶ Scored ─▶ route's answer

A backward model (its tokenizer reads right to left, see model/text/tokenizer.py) gives a valid
log P(sentence) of a whole, finished sentence, so it is scored and weighted like any other model;
it cannot score a prefix or a text after a context, nor continue a text (generation is refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from model.inference.formula import Formula, SweepBest, sweep, weighted_sum
from model.inference.scoring import CandidateScore, Ranking, ScoreOptions, candidate_tokens, rank_results

from .deps import body_worker
from .errors import ApiError, invalid
from .runner import ModelRegistry, ModelRunner
from .schemas import ScoreRequest
from .settings import Settings

LARGE_TEXT_CHARS = 32_768  # candidates this long together are counted in the body worker
HOW_TO_SERVE_BACKWARD = (
    "train one with `rnnlm train --reverse` (or fit/train-ngram --reverse) and add its directory to "
    "RNNLM_MODEL_DIRS; with several, RNNLM_BACKWARD_MODELS maps each forward model to its partner"
)


def is_backward(runner: ModelRunner) -> bool:
    """A right-to-left model: its tokenizer reads text backwards."""
    return runner.lm.tokenizer.backward


def refuse_backward(runner: ModelRunner, what: str = "generate or continue text") -> None:
    """422 naming ``model`` when ``runner`` is a backward model (it cannot continue a prefix)."""
    if is_backward(runner):
        raise invalid(
            "model",
            f"{runner.name!r} is a backward (right-to-left) model: it scores whole sentences (POST /score) "
            f"but cannot {what}; name a forward model",
        )


def backward_partner(registry: ModelRegistry, settings: Settings, runner: ModelRunner) -> ModelRunner:
    """The backward model paired with ``runner`` (itself when it is backward); 422 naming ``direction``
    when there is none."""
    if is_backward(runner):
        return runner
    if settings.backward_models:
        name = settings.backward_models.get(runner.name)
        if name is None:
            raise invalid(
                "direction",
                f"RNNLM_BACKWARD_MODELS names no backward partner of {runner.name!r}; add one "
                f"(it maps {', '.join(map(repr, settings.backward_models))})",
            )
        partner = registry.runners.get(name)
        if partner is None or not is_backward(partner):
            state = "is not served" if partner is None else "is not a backward model"
            raise invalid(
                "direction",
                f"the backward partner of {runner.name!r} in RNNLM_BACKWARD_MODELS, {name!r}, {state}; "
                + HOW_TO_SERVE_BACKWARD,
            )
        return partner
    backward = [r for r in registry.runners.values() if is_backward(r)]
    if len(backward) == 1:
        return backward[0]
    if not backward:
        raise invalid("direction", "no backward model is served; " + HOW_TO_SERVE_BACKWARD)
    names = ", ".join(r.name for r in backward)
    raise invalid(
        "direction",
        f"{len(backward)} backward models are served ({names}); set RNNLM_BACKWARD_MODELS to say which "
        f"is the partner of {runner.name!r}",
    )


@dataclass
class ScoringPlan:
    """A request, planned (see :func:`plan_scoring`): which models score which candidates, and how
    their log-probs make one total."""

    runners: list[ModelRunner]  # each scores once; the first gives logprob, num_tokens, tokens, length
    model_weights: dict[str, float] | None  # None: one model, scored exactly as before these options
    options: ScoreOptions  # what each model is asked (lm_weight and length_bonus apply to the total)
    candidates: Sequence[str]
    external_scores: Sequence[float] | None  # the first pass, one per candidate
    sweep_pairs: Sequence[tuple[float, float]] | None  # (lm_weight, length_bonus) pairs to sweep
    external_weight: float = 1.0  # weights.first_pass_weight
    report_lm: bool = False  # answer each model's log-prob by name (`weights` or `direction` chose)

    @property
    def formula(self) -> Formula:
        """The weights of each candidate's total when several models score."""
        return Formula(
            lm_weight=self.options.lm_weight,
            first_pass_weight=self.external_weight,
            length_bonus=self.options.length_bonus,
        )

    @property
    def model_names(self) -> str | list[str]:
        """What the response's ``model`` says: a name, or the list of names when several scored."""
        names = [r.name for r in self.runners]
        return names if self.model_weights is not None else names[0]


def _check_combination(body: ScoreRequest) -> None:
    """422 naming the field for options that contradict each other."""
    if body.weights is not None:
        given = body.model_fields_set
        if body.lm_weight != 1.0:
            raise invalid(
                "lm_weight",
                "`weights` sets the LM weights: give each model's in weights.models (or drop weights)",
            )
        if body.length_bonus != 0.0:
            raise invalid("length_bonus", "`weights` sets it: use weights.length_bonus (or drop weights)")
        if body.length_unit is not None and body.length_unit != body.weights.length_unit:
            raise invalid(
                "length_unit",
                f"{body.length_unit!r} disagrees with weights.length_unit ({body.weights.length_unit!r}); "
                "drop one",
            )
        if body.sweep is not None:
            raise invalid("sweep", "sweep varies lm_weight and length_bonus, which `weights` fixes; give one")
        if body.direction != "forward":
            raise invalid(
                "direction", "with `weights`, list the backward model by name in weights.models instead"
            )
        if "model" in given and body.model is not None and body.model not in body.weights.models:
            raise invalid("model", "with `weights`, the models are those in weights.models; drop model")
    if body.normalize != "none" and (body.weights is not None or body.direction == "both"):
        raise invalid("normalize", "several models combine their sentence log-probs: use normalize none")
    if body.backward_weight != 1.0 and body.direction != "both":
        raise invalid("backward_weight", 'applies only with direction "both"')


def _check_whole_sentences(body: ScoreRequest, runners: Sequence[ModelRunner]) -> None:
    """A backward model scores whole sentences only: 422 naming context, bos or eos otherwise."""
    backward = [r.name for r in runners if is_backward(r)]
    if not backward:
        return
    why = f"{backward[0]!r} is a backward (right-to-left) model, which scores whole sentences only"
    if body.context:
        raise invalid("context", f"must be empty: {why}")
    if not body.bos:
        raise invalid("bos", f"must be true: {why}")
    if not body.eos:
        raise invalid("eos", f"must be true: {why}")


def plan_scoring(body: ScoreRequest, registry: ModelRegistry, settings: Settings) -> ScoringPlan:
    """The models a request needs and their weights; every 4xx before any model work."""
    _check_combination(body)
    options = ScoreOptions(
        context=body.context,
        bos=body.bos,
        eos=body.eos,
        lm_weight=body.lm_weight,
        length_bonus=body.length_bonus,
        normalize=body.normalize,
        length_unit=body.length_unit,
        hotwords=tuple((body.hotwords or {}).items()),
    )
    weights: dict[str, float] | None = None  # None: one model
    external_weight, report_lm = 1.0, True
    if body.weights is not None:
        runners = []
        for name in body.weights.models:
            runner = registry.runners.get(name)
            if runner is None:
                field = f"weights.models.{name}"
                raise ApiError(
                    404,
                    "model_not_found",
                    f"`{field}`: no served model named {name!r} (served: {', '.join(registry.runners)})",
                    field=field,
                )
            runners.append(runner)
        options = replace(
            options, length_bonus=body.weights.length_bonus, length_unit=body.weights.length_unit
        )
        weights = dict(body.weights.models)
        external_weight = body.weights.first_pass_weight
    else:
        runner = registry.get(body.model)
        if body.direction == "forward":
            runners, report_lm = [runner], False
        elif body.direction == "backward":
            runners = [backward_partner(registry, settings, runner)]
        else:
            if is_backward(runner):
                raise invalid(
                    "direction",
                    f'"both" adds a backward model to a forward one, and `model` ({runner.name!r}) is itself '
                    "backward: name its forward model",
                )
            partner = backward_partner(registry, settings, runner)
            runners = [runner, partner]
            weights = {runner.name: 1.0, partner.name: body.backward_weight}
    _check_whole_sentences(body, runners)
    pairs = [(p.lm_weight, p.length_bonus) for p in body.sweep] if body.sweep is not None else None
    return ScoringPlan(
        runners=runners,
        model_weights=weights,
        options=options,
        candidates=body.candidates,
        external_scores=body.external_scores,
        sweep_pairs=pairs,
        external_weight=external_weight,
        report_lm=report_lm,
    )


@dataclass
class Scored:
    """What a plan's scoring gives: the first model's results with the combined scores and ranking."""

    results: list[CandidateScore]  # in input order; score and rank are the combined ones
    ranking: list[int]
    lm: list[dict[str, float]] | None  # each candidate's log-prob under each model, when several
    rankings: list[Ranking]  # each model's own (for metrics)
    sweep: list[SweepBest] | None


async def refuse_by_cost(plan: ScoringPlan) -> None:
    """413 (past RNNLM_MAX_REQUEST_TOKENS) or 503 (the tokens in flight are full) before any text
    is tokenized: a refused megabyte costs a count of its pieces, not the tokenizing and the id
    checks that the engine's own admission would come after. Long lists are counted off the loop."""
    large = sum(map(len, plan.candidates)) >= LARGE_TEXT_CHARS
    loop = asyncio.get_running_loop()
    for runner in plan.runners:
        args = (runner.lm.tokenizer, plan.candidates, plan.options)
        if large:
            tokens = await loop.run_in_executor(body_worker(), candidate_tokens, *args)
        else:
            tokens = candidate_tokens(*args)
        runner.refuse_score_by_cost(tokens)


async def run_plan(plan: ScoringPlan) -> Scored:
    """Refuse by cost, score with every model of ``plan`` once (concurrently) and combine; sweep when asked."""
    await refuse_by_cost(plan)
    candidates, external_scores, options = plan.candidates, plan.external_scores, plan.options
    first_pass = list(external_scores) if external_scores is not None else [0.0] * len(candidates)
    if plan.model_weights is None:  # one model: its own ranking, exactly as before
        ranking = await plan.runners[0].score(candidates, options, external_scores)
        results, order, rankings = ranking.results, ranking.ranking, [ranking]
        lm = [{plan.runners[0].name: c.logprob} for c in results] if plan.report_lm else None
        external = first_pass
    else:
        each = replace(options, lm_weight=1.0, length_bonus=0.0)
        rankings = list(await asyncio.gather(*(r.score(candidates, each) for r in plan.runners)))
        results = rankings[0].results
        lm = [
            {r.name: rk.results[i].logprob for r, rk in zip(plan.runners, rankings, strict=True)}
            for i in range(len(candidates))
        ]
        formula = plan.formula
        for c, logprobs, e in zip(results, lm, first_pass, strict=True):
            c.lm_term = weighted_sum(logprobs, plan.model_weights)
            c.score = formula.total(c.lm_term, e, c.length, c.hotword_bonus)
        order = rank_results(results)
        external = [plan.external_weight * e for e in first_pass]
    swept = None
    if plan.sweep_pairs is not None:
        terms, lengths = [c.lm_term for c in results], [float(c.length) for c in results]
        fixed = [e + c.hotword_bonus for e, c in zip(external, results, strict=True)]  # what no pair varies
        swept = await asyncio.to_thread(sweep, terms, fixed, lengths, plan.sweep_pairs)
    return Scored(results=results, ranking=order, lm=lm, rankings=rankings, sweep=swept)
