"""Request and response bodies of the ecosystem's protocols, beside our own (service/schemas.py).

* OpenAI's legacy completions and models (``/v1/completions``, ``/v1/models``), field for field
  as the ``openai`` client and lm-evaluation-harness send and read them. Fields OpenAI defines
  that an RNN LM cannot honour are declared with their neutral value, so that any other value
  is refused naming the field instead of being silently ignored.
* The tokenizer endpoints llama.cpp and vLLM both call ``/tokenize`` and ``/detokenize``, and
  vLLM's ``/tokenizer_info`` (which lm-evaluation-harness's remote tokenizer reads).

Bounds use the same :func:`~service.limits.limit` markers as the native bodies, so the same
settings bound them (413 naming the field); the sampling fields come from the library's one
definition (:func:`~service.schemas.sampling_field`), under OpenAI's names (``max_tokens`` is
the library's ``max_new_tokens``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .limits import limit
from .schemas import Finite, ModelName, StopStrings, _Request, _SamplingRequest, sampling_field

OpenAIFinish = Literal["stop", "length"]  # eos and stop strings are both "stop" in OpenAI's terms
# A prompt: text, texts, token ids or lists of token ids (OpenAI accepts all four).
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
PromptInput = (
    str
    | Annotated[list[str], Field(min_length=1)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1)]
)


class StreamOptions(_Request):
    include_usage: bool = Field(
        default=False, description="Send a last chunk with `usage` (and no choices) before `[DONE]`."
    )


# -- /v1/completions --------------------------------------------------------------------------------
class CompletionRequest(_SamplingRequest):
    model: ModelName
    prompt: PromptInput = Field(
        description="Text to continue, a list of texts, a list of token ids, or a list of those. "
        "Token-id prompts may start with the <bos> id (2): then their first token is scored from it."
    )
    max_tokens: int | None = sampling_field(
        "max_new_tokens",
        default=16,
        description="Most tokens to generate per choice; 0 scores the prompt without generating "
        "(with echo and logprobs); null: the server's limit.",
        json_schema_extra=limit("max_new_tokens"),
    )
    temperature: Finite = sampling_field("temperature")
    top_p: Finite = sampling_field("top_p")
    n: int = sampling_field("n", description="Choices per prompt.", json_schema_extra=limit("max_n"))
    stream: bool = Field(default=False, description="Answer as server-sent events ending with [DONE].")
    stream_options: StreamOptions | None = Field(default=None, description="Only with stream: true.")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        description="Return each token's log-prob and this many most likely alternatives at its position.",
        json_schema_extra=limit("max_logprobs"),
    )
    echo: bool = Field(default=False, description="Return the prompt (and its tokens' log-probs) too.")
    stop: StopStrings = Field(
        default_factory=list,
        description="Stop before any of these strings (a single string is accepted too).",
        json_schema_extra=limit("max_stop_strings"),
    )
    seed: int | None = sampling_field("seed", description="Same seed, same output; choice i uses seed + i.")
    user: str | None = Field(default=None, max_length=256, description="Accepted and not used.")
    # vLLM's extensions, the same knobs as /generate's.
    top_k: int = sampling_field("top_k", json_schema_extra=limit("max_top_k"))
    repetition_penalty: Finite = sampling_field("repetition_penalty")
    # OpenAI's fields an RNN LM cannot honour: accepted at their neutral value only.
    suffix: str | None = Field(default=None, description="Not supported (only null or empty).")
    best_of: int | None = Field(default=None, description="Only 1 (or null).")
    logit_bias: dict[str, float] | None = Field(default=None, description="Not supported (only null or {}).")
    presence_penalty: Finite = Field(default=0.0, description="Only 0; see repetition_penalty.")
    frequency_penalty: Finite = Field(default=0.0, description="Only 0; see repetition_penalty.")

    @field_validator(
        "temperature", "top_p", "n", "stream", "echo", "presence_penalty", "frequency_penalty", mode="before"
    )
    @classmethod
    def _null_is_the_default(cls, value: object, info: ValidationInfo) -> object:
        """OpenAI's clients may send null for "not set"."""
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _null_is_no_stop(cls, value: object) -> object:
        return [] if value is None else value  # a single string: _SamplingRequest

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and info.data.get("stream") is not True:
            raise ValueError("only allowed with stream: true")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError(
                "not supported: the model continues a prompt, it does not fill in before a suffix"
            )
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("not supported: only 1 (every one of the n choices is returned)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("not supported: only null or {}")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("not supported: only 0; `repetition_penalty` (as in vLLM) discourages repeats")
        return value


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(description="each token's text (<bos>, <eos> by name)")
    token_logprobs: list[float | None] = Field(
        description="natural log-prob of each token given those before it; null for the first echoed one"
    )
    top_logprobs: list[dict[str, float] | None] = Field(
        description="the `logprobs` most likely tokens at each position (vocabulary pieces, <unk> by "
        "name) and the token itself; null where token_logprobs is"
    )
    text_offset: list[int] = Field(description="where each token starts in the choice's text, in characters")


class CompletionChoice(BaseModel):
    index: int = Field(description="prompt index × n + sample index")
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: OpenAIFinish | None = Field(description="null until a streamed choice ends")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """A completion, or one chunk of a streamed one."""

    id: str = Field(description="cmpl- and the request id")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="Unix time")
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


# -- /v1/models -------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str = Field(description="the value to pass as `model`")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the server loaded it")
    owned_by: str = "rnnlm"
    language: str = Field(default="und", description="zh, en or und (see GET /models)")
    tokenizer: str = Field(default="char", description="char or word (see GET /models)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- /tokenize, /detokenize, /tokenizer_info ----------------------------------------------------------
class TokenizeRequest(_Request):
    model: ModelName
    prompt: str = Field(
        validation_alias=AliasChoices("prompt", "content"),
        description="The text (`content`, llama.cpp's name, is accepted too).",
    )
    add_special_tokens: bool = Field(
        default=False,
        validation_alias=AliasChoices("add_special_tokens", "add_special"),
        description="Put <bos> first, the token the model reads before any text (`add_special` too).",
    )


class TokenPiece(BaseModel):
    id: int
    piece: str = Field(description="the vocabulary's piece: <unk> for text the vocabulary lacks")
    text: str = Field(description="the text it stands for (the unknown text itself for <unk>)")
    start: int = Field(description="offset of `text` in the prompt, in characters (code points)")
    end: int


class TokenizeResponse(BaseModel):
    model: str
    tokens: list[int] = Field(description="token ids, as vLLM and llama.cpp return them")
    count: int
    pieces: list[TokenPiece]
    oov: int = Field(description="pieces unknown to the vocabulary (read as <unk>)")


class DetokenizeRequest(_Request):
    model: ModelName
    tokens: list[Annotated[int, Field(ge=0)]] = Field(
        description="Token ids; <unk> reads as U+FFFD, other specials as nothing.",
        json_schema_extra=limit("max_text_chars"),
    )


class DetokenizeResponse(BaseModel):
    model: str
    prompt: str = Field(description="the text (vLLM's name)")
    content: str = Field(description="the same text (llama.cpp's name)")


class TokenizerInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    tokenizer_class: str = Field(description="char or word")
    vocab_size: int
    bos_token: str
    eos_token: str
    pad_token: str
    unk_token: str
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    unk_token_id: int
