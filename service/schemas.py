"""Request and response bodies. Every field has a description and its bounds, which FastAPI turns
into both the validation (422 naming the field) and the OpenAPI schema at /docs. Fields marked
with :func:`~service.limits.limit` are also bounded by a configured limit (413).

The sampling fields (/generate here, /v1/completions in compat_schemas.py) are made by
:func:`sampling_field` from the library's one definition of each parameter (its default, range and
description: ``SAMPLING_PARAMS`` and ``REQUEST_PARAMS`` in model.inference), which
``SamplingParams`` and ``GenerationRequest`` check themselves against::

    model.inference: SAMPLING_PARAMS["top_p"] = ParamSpec("Nucleus…", gt=0.0, le=1.0)
        ├─▶ SamplingParams(top_p=0)    ValueError "top_p must be in (0, 1], got 0"
        └─▶ sampling_field("top_p")    Field(default=1.0, gt=0.0, le=1.0, description="Nucleus…")
              ├─▶ GenerateRequest.top_p      422 naming top_p; OpenAPI exclusiveMinimum 0, maximum 1
              └─▶ CompletionRequest.top_p    400 in OpenAI's shape (service/openai_errors.py)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from model.decoding import DecodeOptions
from model.inference.generation import REQUEST_PARAMS, GenerationRequest
from model.inference.sampling import SAMPLING_PARAMS, SamplingParams, greedy_if_tiny

from .limits import limit

MAX_ABS_WEIGHT = 1e6  # lm_weight, length_bonus, a hotword's bonus
MAX_HOTWORDS = 1000  # phrases in one request's hotwords
MAX_HOTWORD_CHARS = 100  # characters of one phrase
MAX_ABS_EXTERNAL = 1e15  # external scores: any finite score a pipeline produces
FinishReason = Literal[
    "length", "stop", "eos"
]  # why a sample ended (model.inference.sampling.StoppingCriteria)

ModelName = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Which served model to use (a name from GET /models). Default: the first.",
    ),
]
Finite = Annotated[float, Field(allow_inf_nan=False)]
CacheSalt = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Keeps this request's prefix-state cache entries apart from those of requests "
        "without the same salt, as vLLM's `cache_salt`: a request reuses (and its timing reveals) only "
        "prefixes sent with its own salt by its own tenant (API key). Use a secret value per user of a "
        "shared key, e.g. 43 random base64 characters (256 bits).",
    ),
]


class _Request(BaseModel):
    # A misspelt field is an error, not silently ignored; so is a value of the wrong JSON type
    # (strict: `"lm_weight": false` or `"n": 2.0` is a 422, not a silent 0.0 or 2; an int is a float).
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats_are_integers(cls, value: object) -> object:
        """JSON Schema's integer is 2 or 2.0 (strict mode alone would refuse 2.0 for an int)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


# -- the sampling fields: one definition, in the library -----------------------------------------------
LIBRARY_PARAMS = {**SAMPLING_PARAMS, **REQUEST_PARAMS}
_LIBRARY_DEFAULTS = {name: getattr(SamplingParams(), name) for name in SAMPLING_PARAMS} | {
    name: getattr(GenerationRequest(), name) for name in REQUEST_PARAMS
}
StopStrings = list[Annotated[str, Field(min_length=1)]]


def sampling_field(name: str, **overrides: Any) -> Any:
    """The request field of the library's parameter ``name`` (a field of ``SamplingParams`` or
    ``GenerationRequest``): its default, bounds and description from model.inference, so both
    APIs take a bound from one place. ``overrides``: a protocol's own default or words, a
    :func:`~service.limits.limit`, or a bound stricter than the library's (never a looser one)."""
    spec = LIBRARY_PARAMS[name]
    for key, value in overrides.items():
        library = getattr(spec, key) if key in ("ge", "gt", "le") else None
        if library is not None and (value < library if key != "le" else value > library):
            raise ValueError(f"{name}: {key}={value} is looser than the library's {key}={library}")
    fields = {"default": _LIBRARY_DEFAULTS[name], "description": spec.doc, **spec.bounds(), **overrides}
    return Field(**fields)


class _SamplingRequest(_Request):
    """What /generate and /v1/completions both do with their sampling fields."""

    @field_validator("stop", mode="before", check_fields=False)
    @classmethod
    def _single_stop(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("temperature", check_fields=False)
    @classmethod
    def _tiny_temperature_is_greedy(cls, value: float) -> float:
        return greedy_if_tiny(value)  # as the library does (logits / 1e-300 would be NaN)


# -- /next-token ------------------------------------------------------------------------------------
class NextTokenRequest(_Request):
    model: ModelName
    text: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="The context (the model starts from <bos>), or a non-empty list of contexts "
        "scored as a batch. Any text is valid: empty, whitespace, unknown characters "
        "(read as <unk>), emoji, mixed scripts.",
        json_schema_extra=limit("max_batch_texts"),
    )
    top_k: int = Field(
        default=10,
        ge=1,
        description="How many of the most likely next tokens to return.",
        json_schema_extra=limit("max_top_k"),
    )
    cache_salt: CacheSalt


class TokenProbOut(BaseModel):
    token: str = Field(description="the token's text; specials by name (<eos>, <unk>)")
    id: int = Field(description="vocabulary id")
    prob: float = Field(description="probability under the raw model")
    logprob: float = Field(description="natural log of prob")
    special: bool = Field(description="one of <pad> <unk> <bos> <eos>, not text to append")


class NextTokenResult(BaseModel):
    tokens: list[str] = Field(description="the context as the model sees it, one piece per token")
    oov: int = Field(description="context pieces unknown to the vocabulary (read as <unk>)")
    next: list[TokenProbOut] = Field(description="the top_k most likely next tokens, most likely first")
    entropy: float = Field(description="entropy of the full next-token distribution, in nats")


class NextTokenResponse(NextTokenResult):
    model: str


class NextTokenBatchResponse(BaseModel):
    model: str
    results: list[NextTokenResult] = Field(description="one result per input text, in input order")


# -- /score -----------------------------------------------------------------------------------------
LengthUnit = Literal["tokens", "chars", "words"]
Direction = Literal["forward", "backward", "both"]
MAX_WEIGHTED_MODELS = 32  # models in one `weights`
Weight = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)]
ServedName = Annotated[str, Field(min_length=1, max_length=200)]


class SweepPoint(_Request):
    """One (lm_weight, length_bonus) pair of a sweep."""

    lm_weight: Weight = Field(description="Weight of the LM term.")
    length_bonus: Weight = Field(description="Added per unit of length (negative: a penalty).")


class RescoringWeights(BaseModel):
    """The weights JSON that `rnnlm tune` writes. Its other keys (metadata) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    first_pass_weight: Weight = Field(default=1.0, description="Weight of `external_scores` (first pass).")
    length_bonus: Weight = Field(default=0.0, description="Added per unit of length.")
    length_unit: LengthUnit = Field(default="tokens", description="Unit of the length term.")
    models: dict[ServedName, Weight] = Field(
        min_length=1,
        max_length=MAX_WEIGHTED_MODELS,
        description="Served model name → weight of its sentence log-prob. Each is scored once.",
    )


class ScoreRequest(_Request):
    model: ModelName
    candidates: list[str] = Field(
        min_length=1,
        description="Texts to score and rank (e.g. an n-best list). Any text is valid.",
        json_schema_extra=limit("max_candidates"),
    )
    context: str = Field(
        default="",
        description="A prefix that conditions every candidate but is not scored. Must be empty for a "
        "backward model (it scores whole sentences only).",
    )
    bos: bool = Field(
        default=True,
        description=(
            "The text starts a sentence: its first token is scored from the <bos> start state. With false "
            "(and no context) the first token only conditions: an RNN has no state for 'anywhere in a "
            "sentence', so it is not scored. Must be true for a backward model."
        ),
    )
    eos: bool = Field(
        default=True,
        description="The text ends a sentence: score P(<eos>) after it, like KenLM. Must be true for a "
        "backward model.",
    )
    per_token: bool = Field(
        default=False,
        description="Return each scored token's log-prob. A backward model lists its tokens in its reading "
        "order, right to left.",
    )
    external_scores: (
        list[Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_EXTERNAL, le=MAX_ABS_EXTERNAL)]] | None
    ) = Field(
        default=None,
        description="One score per candidate (e.g. acoustic or translation model), "
        "added to the combined score (× `weights.first_pass_weight` when `weights` is given).",
    )
    lm_weight: Finite = Field(
        default=1.0,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="Weight of the LM term in the combined score.",
    )
    length_bonus: Finite = Field(
        default=0.0,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="Added to the score per unit of length (see `length_unit`; negative: a penalty).",
    )
    normalize: Literal["none", "token"] = Field(
        default="none", description="LM term: the log-prob sum (none) or its mean per token (token)."
    )
    length_unit: LengthUnit | None = Field(
        default=None,
        description="Unit of the length that `length_bonus` multiplies: tokens (the candidate's tokens, "
        "without <bos>/<eos>), chars (characters, whitespace excluded) or words (whitespace-separated; "
        "unsegmented Chinese counts 1 per run of non-space text). Absent: per scored token, <eos> "
        "included (the behaviour before this field; it ranks as `tokens` does).",
    )
    hotwords: (
        dict[
            Annotated[str, Field(min_length=1, max_length=MAX_HOTWORD_CHARS)],
            Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)],
        ]
        | None
    ) = Field(
        default=None,
        max_length=MAX_HOTWORDS,
        description=f"Contextual biasing: phrases you expect (names, terms) with a bonus, added to a "
        f"candidate's score once per occurrence of the phrase in it (as WeNet's and icefall's context "
        f'graphs reward a listed phrase), e.g. {{"李素丽": 4.0}}. The LM log-probs are untouched; each '
        f"result's `hotword_bonus` says what was added. At most {MAX_HOTWORDS} phrases of 1 to "
        f"{MAX_HOTWORD_CHARS} characters; docs/ADAPT.md measures what a bonus buys.",
    )
    sweep: list[SweepPoint] | None = Field(
        default=None,
        min_length=1,
        description="Many (lm_weight, length_bonus) pairs ranked at once: the LM scores each candidate "
        "once, and the response's `sweep` gives the best candidate under each pair, in input order.",
        json_schema_extra=limit("max_sweep"),
    )
    weights: RescoringWeights | None = Field(
        default=None,
        description="The weights file `rnnlm tune` writes: total = first_pass_weight × external score + "
        "Σ weight_m × logprob_m + length_bonus × length, each listed model scored once. Replaces "
        "`model`, `lm_weight`, `length_bonus` and `direction`; `length_unit`, if given, must agree.",
    )
    direction: Direction = Field(
        default="forward",
        description="forward: score with `model`; backward: with its backward partner (a right-to-left "
        "model, RNNLM_BACKWARD_MODELS); both: logprob of `model` + backward_weight × logprob of its "
        "partner. A backward model scores whole sentences only (empty context, bos and eos true).",
    )
    backward_weight: Finite = Field(
        default=1.0,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="With direction both: weight of the backward model's log-prob.",
    )
    cache_salt: CacheSalt

    @field_validator("external_scores")
    @classmethod
    def _one_per_candidate(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        candidates = info.data.get("candidates")
        if value is not None and candidates is not None and len(value) != len(candidates):
            raise ValueError(
                f"has {len(value)} values for {len(candidates)} candidates; give exactly one per candidate"
            )
        return value


class TokenLogprob(BaseModel):
    token: str = Field(description="the token's text; <eos> for the end of the sentence")
    logprob: float = Field(description="natural log-prob of this token given everything before it")


class CandidateResult(BaseModel):
    text: str
    logprob: float = Field(
        description="sum of the scored tokens' log-probs (natural log); with several models, the first's "
        "(`model`, or the first of `weights.models`); each model's is in `lm`"
    )
    num_tokens: int = Field(description="scored tokens, <eos> included when eos is true")
    oov: int = Field(description="pieces unknown to the vocabulary (scored as <unk>)")
    oov_logprob: float = Field(
        default=0.0,
        description="the part of logprob scored at those <unk> tokens: each unknown piece gets "
        "P(<unk> | context), the probability of *some* word the vocabulary lacks, which flatters a "
        "candidate full of unknown words; compare candidates whose oov differ by logprob - oov_logprob "
        "(the known tokens only) or prefer a model that knows the words",
    )
    perplexity: float | None = Field(description="exp(-logprob / num_tokens); null when nothing was scored")
    score: float = Field(
        description="lm_weight × LM term + external score + length_bonus × length + hotword_bonus (with "
        "`weights`: first_pass_weight × external score + Σ weight_m × logprob_m + length_bonus × length "
        "+ hotword_bonus)"
    )
    rank: int = Field(description="1 = best; equal scores keep input order")
    length: int = Field(
        description="what length_bonus multiplies: the length in `length_unit`, else num_tokens"
    )
    hotword_bonus: float = Field(default=0.0, description="what `hotwords` added to the score (0 without)")
    lm: dict[str, float] | None = Field(
        default=None,
        description="each model's sentence log-prob, by served name, when `weights` or `direction` "
        "chose the models (null otherwise: see logprob)",
    )
    token_logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="per scored token, when per_token is true (they sum to logprob); a backward model's "
        "in its reading order, right to left",
    )


class SweepResult(BaseModel):
    lm_weight: float
    length_bonus: float
    best: int = Field(description="index of the best candidate under this pair (the first among equals)")
    score: float = Field(description="the best candidate's score under this pair")


class ScoreResponse(BaseModel):
    model: str | list[str] = Field(
        description="the model that scored; a list of names when several did (`weights`, direction both)"
    )
    results: list[CandidateResult] = Field(description="one per candidate, in input order")
    ranking: list[int] = Field(description="candidate indices, best first")
    sweep: list[SweepResult] | None = Field(
        default=None, description="with `sweep`: the best candidate under each pair, in input order"
    )


# -- /embed -----------------------------------------------------------------------------------------
class EmbedRequest(_Request):
    model: ModelName
    texts: list[str] = Field(
        min_length=1,
        description="The texts to embed, as a batch (a text's vector does not depend on the others). Any "
        "text is valid, empty included (its vector is the state after <bos>). Their tokens together, "
        "each text with its <bos>, may cost at most RNNLM_MAX_REQUEST_TOKENS (past it: 413 naming "
        "`texts`).",
        json_schema_extra=limit("max_batch_texts"),
    )
    pooling: Literal["last", "mean"] = Field(
        default="last",
        description="How the top recurrent layer's hidden states become one vector. The model reads "
        "<bos> and the text (no <eos>); `last`: the state after the text's last token; `mean`: the mean "
        "of the states after each of the text's tokens (the state after <bos> left out). An empty text "
        "gets the state after <bos> under both. A backward model reads the text right to left: its "
        "`last` is the state after the text's first character.",
    )
    normalize: bool = Field(
        default=False,
        description="Divide each vector by its L2 norm (unit length: a dot product is then the cosine).",
    )


class EmbedResponse(BaseModel):
    model: str = Field(description="the model that embedded the texts")
    dim: int = Field(description="the vectors' length: the model's hidden_dim")
    pooling: Literal["last", "mean"] = Field(description="the pooling used")
    embeddings: list[list[float]] = Field(description="one vector per text, in input order")
    tokens: list[int] = Field(description="each text's tokens as the model read them (without <bos>)")


# -- /tag ------------------------------------------------------------------------------------------
class TagRequest(_Request):
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Which served tagger to use (a name from GET /models `heads`, kind `tagger`). Default: "
        "the first tagger served (RNNLM_HEAD_DIRS).",
    )
    texts: list[str] = Field(
        min_length=1,
        description="The texts to tag, as a batch (a text's words do not depend on the others). Each "
        "character is read as the tagger's vocabulary has it (one it never saw is read as unknown, and "
        "still tagged). Whitespace separates words and belongs to none: each run between whitespace is "
        "tagged on its own, and spans count the text as sent. An empty text (or only whitespace) has no "
        "words. Their characters together: at most RNNLM_MAX_REQUEST_TOKENS (past it: 413 naming "
        "`texts`).",
        json_schema_extra=limit("max_batch_texts"),
    )


class TaggedWordItem(BaseModel):
    word: str = Field(description="the word: text[start:end]")
    tag: str = Field(description="its part of speech, in the tagger's tag set (pd98: n noun, v verb, …)")
    start: int = Field(description="offset of its first character in the text (code points)")
    end: int = Field(description="one past its last character")


class TagResult(BaseModel):
    words: list[TaggedWordItem] = Field(description="the text's words, in reading order")


class TagResponse(BaseModel):
    model: str = Field(description="the tagger that tagged the texts")
    results: list[TagResult] = Field(description="one per text, in input order")


# -- /classify -------------------------------------------------------------------------------------
class ClassifyRequest(_Request):
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Which served classifier to use (a name from GET /models `heads`, kind `classifier`). "
        "Default: the first classifier served (RNNLM_HEAD_DIRS).",
    )
    texts: list[str] = Field(
        min_length=1,
        description="The texts to classify, as a batch (a text's label does not depend on the others). Each "
        "character is read as the classifier's vocabulary has it (one it never saw is read as unknown); a "
        "text longer than the classifier's `max_chars` (GET /models `architecture`) is judged by its "
        "first `max_chars` characters. An empty text has a label too. Their characters together: at most "
        "RNNLM_MAX_REQUEST_TOKENS (past it: 413 naming `texts`).",
        json_schema_extra=limit("max_batch_texts"),
    )


class ClassifyResult(BaseModel):
    label: str = Field(description="the most probable label (sentiment: neg or pos)")
    probability: float = Field(description="its probability, in [0, 1]")
    probabilities: dict[str, float] = Field(
        description="every label's probability (they sum to 1), in the classifier's label order"
    )


class ClassifyResponse(BaseModel):
    model: str = Field(description="the classifier that labelled the texts")
    results: list[ClassifyResult] = Field(description="one per text, in input order")


# -- /decode ----------------------------------------------------------------------------------------
LATTICE_CHARS_PER_ARC = 128  # an SLF lattice's text may hold this many characters per allowed arc
_DECODE_DEFAULTS = DecodeOptions()  # the library's defaults, set in one place
FirstPassScore = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_EXTERNAL, le=MAX_ABS_EXTERNAL)]
# [word, score]: a JSON array of two, so the pair itself is not strict (strict wants a Python tuple)
Alternative = Annotated[tuple[str, FirstPassScore], Strict(False)]


class DecodeRequest(_Request):
    model: ModelName
    slots: list[Annotated[list[Alternative], Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="A confusion network: one slot per position, each a non-empty list of `[word, score]` "
        'alternatives, e.g. `[[["我", -0.1], ["卧", -2.3]], [["们", -0.2], ["", -1.7]]]`. A path takes one '
        "alternative per slot; an empty word is a deletion (nothing said there). A score is the first "
        "pass's (a log posterior or log-likelihood, natural log, higher is better: finite) and enters a "
        "path's total as it is. A word of several tokens (北京 for a character model) is read token by "
        "token. Give `slots` or `lattice`, not both. Alternatives per slot: at most "
        "RNNLM_MAX_DECODE_ALTERNATIVES (past it: 413 naming `slots.i`).",
        json_schema_extra=limit("max_decode_slots"),
    )
    lattice: str | None = Field(
        default=None,
        min_length=1,
        description="An HTK SLF lattice's text (what HTK and Kaldi export: a size line N= L=, node lines "
        "I=, arc lines J= S= E= with a= and l=; words on nodes or arcs; docs/DECODING.md lists what is "
        "read). A malformed one is a 422 whose message names the line. Arcs: at most "
        f"RNNLM_MAX_DECODE_ARCS (past it: 413 naming `lattice`); its text: {LATTICE_CHARS_PER_ARC} "
        "characters per allowed arc. Give `slots` or `lattice`, not both.",
        json_schema_extra=limit("max_decode_arcs", chars_per=LATTICE_CHARS_PER_ARC),
    )
    beam: int = Field(
        default=_DECODE_DEFAULTS.beam,
        ge=1,
        description="Hypotheses kept per node (per slot of a confusion network) after merging those the "
        "model cannot tell apart. Wider finds better paths and costs more: the search's cost, bounded "
        "before it starts (RNNLM_MAX_DECODE_COST), grows with beam × slots and beam × alternatives.",
        json_schema_extra=limit("max_decode_beam"),
    )
    nbest: int = Field(
        default=_DECODE_DEFAULTS.nbest,
        ge=1,
        description="Paths returned, best first; at most `beam`.",
    )
    lm_weight: Finite = Field(
        default=_DECODE_DEFAULTS.lm_weight,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="Weight of the model's log-prob in a path's total: score = acoustic + lm_weight × "
        "lm_logprob + length_bonus × num_tokens (the formula of /score with the first pass's scores as "
        "`external_scores`).",
    )
    length_bonus: Finite = Field(
        default=_DECODE_DEFAULTS.length_bonus,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="Added per token of the model in a path (a word-insertion bonus; negative: a penalty).",
    )
    max_arcs: int = Field(
        default=_DECODE_DEFAULTS.max_arcs,
        ge=0,
        description="Per-slot pruning: only the K best-scored alternatives of each slot (arcs leaving each "
        "lattice node) are searched; 0: all. Lowers the search's cost.",
    )
    beam_threshold: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Also drop hypotheses more than this far below their node's best (null: off).",
    )
    acoustic_scale: Finite = Field(
        default=1.0,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="With `lattice`: an arc's score is acoustic_scale × its a= (acoustic) plus "
        "lattice_lm_weight × its l=. Not for `slots` (their scores are used as given).",
    )
    lattice_lm_weight: Finite = Field(
        default=0.0,
        ge=-MAX_ABS_WEIGHT,
        le=MAX_ABS_WEIGHT,
        description="With `lattice`: the weight of the first pass's LM score (l=) in an arc's score; 0 (the "
        "default) replaces the lattice's LM with the model's. Not for `slots`.",
    )

    @field_validator("nbest")
    @classmethod
    def _within_the_beam(cls, value: int, info: ValidationInfo) -> int:
        beam = info.data.get("beam")
        if beam is not None and value > beam:
            raise ValueError(f"{value} is more than `beam` ({beam}): a search keeps at most beam paths")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> DecodeRequest:
        if (self.slots is None) == (self.lattice is None):
            given = "both" if self.slots is not None else "neither"
            raise ValueError(
                f"give exactly one of `slots` (a confusion network) or `lattice` (SLF text); {given} given"
            )
        return self

    @field_validator("acoustic_scale", "lattice_lm_weight")
    @classmethod
    def _lattice_only(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("slots") is not None:  # given (defaults are not validated) beside slots
            raise ValueError("applies to a `lattice` only; scale the slots' scores before sending them")
        return value

    def options(self) -> DecodeOptions:
        """The library's options for this search."""
        return DecodeOptions(
            beam=self.beam,
            nbest=self.nbest,
            lm_weight=self.lm_weight,
            length_bonus=self.length_bonus,
            max_arcs=self.max_arcs,
            beam_threshold=self.beam_threshold or _DECODE_DEFAULTS.beam_threshold,  # None: off
        )


class DecodedResult(BaseModel):
    text: str = Field(description="the path's words joined as the model's tokenizer joins pieces")
    words: list[str] = Field(description="the path's non-empty words (alternatives), in order")
    score: float = Field(description="acoustic + lm_weight × lm_logprob + length_bonus × num_tokens")
    lm_logprob: float = Field(
        description="the model's log-prob of the text, <bos> … <eos> (<eos> counted): what /score gives it"
    )
    acoustic: float = Field(description="the sum of the path's first-pass scores (slots' or arcs')")
    num_tokens: int = Field(description="the model's tokens of the text (no <bos>/<eos>)")


class DecodeSearch(BaseModel):
    cost: int = Field(description="the search's bound in model rows, checked before it started")
    steps: int = Field(description="batched model steps taken")
    stepped_rows: int = Field(description="hypothesis rows fed through them")
    merged: int = Field(description="hypotheses merged into a better one the model could not tell apart")
    expansions: int = Field(description="(hypothesis, alternative) pairs scored")


class DecodeResponse(BaseModel):
    model: str = Field(description="the model that searched")
    results: list[DecodedResult] = Field(description="at most `nbest` paths, best (highest score) first")
    search: DecodeSearch = Field(description="what the search did")


# -- /generate --------------------------------------------------------------------------------------
class GenerateRequest(_SamplingRequest):
    model: ModelName
    prompt: str = Field(default="", description="Text to continue (the model starts from <bos>).")
    # at least 1 here (the library allows 0, as /v1/completions does: there it scores the echo)
    max_new_tokens: int = sampling_field("max_new_tokens", ge=1, json_schema_extra=limit("max_new_tokens"))
    temperature: Finite = sampling_field("temperature")
    top_k: int = sampling_field("top_k", json_schema_extra=limit("max_top_k"))
    top_p: Finite = sampling_field("top_p")
    repetition_penalty: Finite = sampling_field("repetition_penalty")
    stop: StopStrings = Field(
        default_factory=list,
        description="Stop when the text contains one of these; the text returned "
        "ends just before it. A single string is accepted too.",
        json_schema_extra=limit("max_stop_strings"),
    )
    seed: int | None = sampling_field("seed")
    n: int = sampling_field("n", json_schema_extra=limit("max_n"))
    return_logprobs: bool = Field(default=False, description="Return each generated token's log-prob.")
    stream: bool = Field(
        default=False,
        description=(
            "Answer as server-sent events: one `token` event per generated token, then a `done` event "
            "with the whole response (the same body as without streaming)."
        ),
    )


class GeneratedSample(BaseModel):
    index: int = Field(description="which of the n samples")
    text: str = Field(description="the continuation (ends before the stop string, if one was hit)")
    finish_reason: FinishReason
    num_tokens: int = Field(description="tokens generated, <eos> and the stop string's tokens included")
    seed: int = Field(description="the seed this sample used")
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="per generated token, raw model log-probs (when return_logprobs)"
    )


class GenerateResponse(BaseModel):
    model: str
    text: str = Field(description="the first sample's continuation")
    finish_reason: FinishReason = Field(description="the first sample's")
    num_tokens: int = Field(description="the first sample's generated token count")
    seed: int = Field(description="the seed used (given or drawn); sample i used seed + i")
    logprobs: list[TokenLogprob] | None = Field(default=None, description="the first sample's, if asked")
    prompt_tokens: int = Field(description="tokens in the prompt")
    samples: list[GeneratedSample] = Field(description="all n samples, the first included")


class TokenEventData(BaseModel):
    """The data of one ``token`` server-sent event."""

    sample: int = Field(description="which of the n samples")
    index: int = Field(description="position of the token within its sample")
    id: int
    token: str = Field(description="the token's text (<eos> by name)")
    logprob: float
    text: str = Field(
        description="text to append to the sample's output now; the text of a possible "
        "stop string is held back until it is ruled out. Concatenated, "
        "a sample's `text` values give its final text."
    )
    finish_reason: FinishReason | None = None


# -- /models ----------------------------------------------------------------------------------------
class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the value to pass as `model`")
    default: bool = Field(description="used when a request names no model")
    kind: str = Field(description="model family, e.g. rnn")
    tokenizer: str = Field(description="tokenizer kind: char or word")
    language: str = Field(
        default="und",
        description="the language of its training text: zh, en (und: undetermined), told by its script",
    )
    normalizer: str = Field(
        default="",
        description="word models: how raw text is read, as its corpus was prepared (wikitext: `do n't`, "
        "spaced punctuation; ptb: lower case, numbers as N); empty: whitespace-separated as sent",
    )
    direction: str = Field(
        default="forward",
        description="reading order: forward, or backward (right to left: scores whole sentences, never "
        "generates)",
    )
    vocab_size: int
    parameters: int | None = None
    device: str
    architecture: dict = Field(default_factory=dict, description="cell, layers, widths")
    components: dict | list = Field(
        default_factory=dict, description="what a hybrid or mixture is made of (e.g. its rnn and n-gram)"
    )
    training: dict = Field(
        default_factory=dict, description="training data, steps and time, from the checkpoint"
    )
    metrics: dict = Field(default_factory=dict, description="validation and test figures from the checkpoint")


class HeadInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(
        description="the value to pass as `model` to the head's route (a tagger: POST /tag; a "
        "classifier: POST /classify)"
    )
    kind: str = Field(
        description="what the head does: tagger (words and parts of speech) or classifier (a label per text)"
    )
    labels: int = Field(
        description="its output classes (a tagger: B/M/E/S × each tag it saw; a classifier: its labels)"
    )
    classes: list[str] = Field(
        description="what it assigns (a tagger: its part-of-speech tags; a classifier: its labels, in order)"
    )
    tokenizer: str = Field(description="tokenizer kind: char")
    vocab_size: int
    parameters: int
    device: str
    architecture: dict = Field(default_factory=dict, description="head, cell, layers, widths")
    training: dict = Field(
        default_factory=dict, description="training data and sentences or texts, from the checkpoint"
    )
    metrics: dict = Field(
        default_factory=dict,
        description="valid/test figures (a tagger: segmentation F1, POS accuracy, …; a classifier: accuracy)",
    )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    heads: list[HeadInfo] = Field(
        default_factory=list,
        description="the task heads served beside the models (RNNLM_HEAD_DIRS), each with its route's "
        "`model` name; empty when none is served",
    )
    default_choice: dict | None = Field(
        default=None,
        description=(
            "how the default model was chosen: the valid-split reranking figures of each candidate "
            "(weights/DEFAULT.json, written by `rnnlm benchmark choose-default`)"
        ),
    )


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    models: list[str] | None = Field(
        default=None,
        description="the served models; omitted for a request without a valid key when API keys are set",
    )
