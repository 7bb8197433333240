"""Runtime settings of the service, from the environment (prefix ``RNNLM_``).

``get_settings()`` is cached; tests build their own ``Settings(...)`` and hand it to
``create_app``, or override the ``get_settings`` dependency. Every limit a request is checked
against lives here, so an operator tunes them without touching code, and the OpenAPI schema at
/docs shows the values in force.

::

    RNNLM_MODEL_DIRS=weights/pd98-char-lstm,weights/other   # or a JSON list; the first is the default
    RNNLM_HEAD_DIRS=weights/pd98-tagger                     # task heads (POST /tag); default none
    RNNLM_DEVICE=auto                                       # auto | cpu | cuda | cuda:N
    RNNLM_MAX_CANDIDATES=1000                               # ... one variable per field below
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.inference.engine import EngineConfig

from .default_choice import default_model_dirs  # weights/DEFAULT.json, under the checkpoint files' rules


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RNNLM_", extra="ignore")

    # -- what to serve, where ---------------------------------------------------------------------
    model_dirs: Annotated[list[str], NoDecode] = Field(
        default=None,  # None: weights/DEFAULT.json's list, checked (a bad file is a settings error)
        validate_default=True,
        min_length=1,
        description="Checkpoint directories to serve (relative to the working directory); the first "
        "is the default model. Comma-separated or a JSON list. Default: the list in "
        "weights/DEFAULT.json (written by `rnnlm benchmark choose-default`).",
    )
    head_dirs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Checkpoint directories of task heads to serve beside the models (a tagger of `rnnlm "
        "train-tagger`: POST /tag), comma-separated or a JSON list; each is named by its directory's base "
        "name and listed under `heads` in GET /models. Loaded at start-up under the models' file rules: "
        "a broken one stops the start. Default: none",
    )
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA when available, else CPU"
    )
    precision: str = Field(
        default="fp32",
        pattern=r"^(fp32|bf16)$",
        description="precision of the RNN models' matrix products: fp32, or bf16 (bfloat16 weights and "
        "products, float32 states and log-probs; needs a CPU with AVX512-BF16/AMX, or a GPU). A model "
        "that cannot (another kind, or a device without bf16) keeps fp32 with a warning; /models shows each",
    )
    model_precision: dict[str, Literal["fp32", "bf16"]] = Field(
        default_factory=dict,
        description="per-model precision, a JSON object (model name to fp32 or bf16) that overrides "
        "RNNLM_PRECISION for those models; a model that cannot run it stops the start",
    )
    batch_invariant: bool = Field(
        default=False,
        description="RNN scores bit-identical whatever else shares their batch (every matrix product on "
        "fixed 8-row tiles; costs most on narrow work such as one /next-token). Off: a token's log-prob may "
        "move by a few 1e-6 with the batch",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    torch_threads: int = Field(default=0, ge=0, description="torch intra-op threads (0: torch default)")
    log_level: str = Field(default="info", pattern=r"^(?i:critical|error|warning|info|debug)$")
    keep_alive_s: int = Field(
        default=5,
        ge=1,
        description=(
            "how long an idle HTTP connection stays open; behind a load balancer, more than its idle timeout"
        ),
    )

    # -- batching engine (model/inference/engine): one per served model ------------------------------------
    batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description=("how long the first /score or /next-token request waits for others to share its batch"),
    )
    max_batch_tokens: int = Field(default=32_768, ge=1, description="tokens in one scoring batch")
    max_generation_rows: int = Field(
        default=128,
        ge=1,
        description=("samples decoded together in the running generation batch; more wait their turn"),
    )
    engine_queue: int = Field(
        default=256, ge=1, description=("requests waiting to start per model; past it: 503 + Retry-After")
    )
    prefix_sharing: bool = Field(
        default=True,
        description=("score each distinct prefix of a candidate list once (false: every candidate in full)"),
    )
    prefix_cache_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description=(
            "bytes of RNN states of recent prefixes kept per model, so a text that extends one (typing, "
            "a candidate list with the same context) starts from its state; least recently used go first. "
            "0: no cache"
        ),
    )

    # -- limits: past them a request gets 413 naming the field ------------------------------------
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="request body size")
    max_text_chars: int = Field(default=10_000, ge=1, description="characters in any one string")
    max_candidates: int = Field(default=1000, ge=1, description="candidates per /score request")
    max_batch_texts: int = Field(
        default=256,
        ge=1,
        description="texts per /next-token or /embed request; prompts per /v1/completions request",
    )
    max_top_k: int = Field(default=1000, ge=1, description="top_k of /next-token and /generate")
    max_new_tokens: int = Field(default=1024, ge=1, description="max_new_tokens of /generate")
    max_n: int = Field(default=16, ge=1, description="samples per /generate request")
    max_stop_strings: int = Field(default=16, ge=0, description="stop strings per /generate request")
    max_stop_bytes: int = Field(
        default=160_000,
        ge=0,
        description="stop strings of one request together, UTF-8 bytes (past it: 422 `stop`)",
    )
    max_logprobs: int = Field(
        default=20, ge=0, description="`logprobs` of /v1/completions: top alternatives per token"
    )
    max_sweep: int = Field(
        default=1000, ge=1, description="(lm_weight, length_bonus) pairs in one /score `sweep`"
    )
    backward_models: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "each forward model's backward partner for /score `direction` (a JSON object: forward name "
            "to backward name). Unset: the one served backward model, if exactly one is served"
        ),
    )
    sse_ping_s: float = Field(default=15.0, ge=0, description="keep-alive comment interval of streams")

    # -- /decode: search with the model in the loop (past them: 413 naming the field) -----------------
    max_decode_slots: int = Field(default=256, ge=1, description="slots of one /decode confusion network")
    max_decode_alternatives: int = Field(
        default=64, ge=1, description="alternatives in one slot of a /decode confusion network"
    )
    max_decode_arcs: int = Field(
        default=20_000,
        ge=1,
        description="arcs (links) of one /decode lattice; its SLF text may hold 128 characters per arc",
    )
    max_decode_beam: int = Field(default=64, ge=1, description="`beam` of /decode (hypotheses kept per node)")
    max_decode_cost: int = Field(
        default=12_000,
        ge=1,
        description=(
            "the work one /decode search may do, in model rows stepped, bounded before it starts "
            "(model.decoding.search_cost: beam × slots or nodes, more for words of several tokens, its "
            "batched steps, its expansions, the n best paths rescored); it is also admitted as that many "
            "tokens (RNNLM_MAX_REQUEST_TOKENS, RNNLM_MAX_TOKENS_IN_FLIGHT). At 12,000 the costliest shapes "
            "measured (long or wide networks, beam 64, nbest 64, words of several tokens, lattices) took "
            "1.8 to 2.8 s on one core of a busy 2-core CPU with mix-char-hybrid; 40 slots × 12 "
            "alternatives at beam 16 costs about 2,600. Past it: 413"
        ),
    )

    # -- connections and request bodies (service/server.py, service/limits.py) ---------------------
    max_connections: int = Field(
        default=4096,
        ge=1,
        description=(
            "open client connections; past it the oldest idle one is closed, else the new one gets 503 (kept "
            "below the process's file-descriptor limit)"
        ),
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="time to send a request line and headers (from the first byte); past it: 408 and closed",
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="longest pause while a request body is received; past it: 408"
    )
    max_buffered_body_bytes: int = Field(
        default=64_000_000,
        ge=1,
        description=(
            "request body bytes held across all connections (declared lengths reserved up front); past it: "
            "503 + Retry-After"
        ),
    )

    # -- overload, deadlines, shutdown (service/admission.py, service/guard.py) ----------------------
    max_in_flight: int = Field(
        default=64,
        ge=1,
        description=(
            "requests admitted per model at once, running or queued, streams included; past it: 503 + "
            "Retry-After at once"
        ),
    )
    max_streams: int = Field(default=32, ge=1, description="open /generate streams, all models together")
    stream_backlog: int = Field(
        default=64,
        ge=1,
        description="token events per sample a stream's client may be behind (not read) before its "
        "generation pauses",
    )
    send_buffer_bytes: int = Field(
        default=65_536,
        ge=0,
        description="kernel send buffer of each connection (0: the kernel's default); small, so a "
        "stream whose client stops reading blocks soon and its generation pauses",
    )
    stream_stall_s: float = Field(
        default=30.0,
        ge=0,
        description="a stream whose client reads nothing this long is ended and its slot freed. 0: no limit",
    )
    max_request_tokens: int = Field(
        default=65_536,
        ge=1,
        description=(
            "tokens one /score, /next-token, /embed or /v1/completions request may cost (candidates with "
            "their context, the texts' prefixes (an /embed text with its <bos>), or a completion's prompts, "
            "echoed positions and prompts × n × max_tokens to generate); past it: 413"
        ),
    )
    max_tokens_in_flight: int = Field(
        default=262_144,
        ge=1,
        description=(
            "tokens of the /score and /next-token requests queued or running per model; past it: 503 + "
            "Retry-After. With RNNLM_MAX_REQUEST_TOKENS it bounds the engine's memory"
        ),
    )
    engine_chunk_positions: int = Field(
        default=1024,
        ge=1,
        description=(
            "positions a scoring pass computes between checks for work nobody waits for (client gone, "
            "deadline passed); such work stops within one chunk"
        ),
    )
    max_next_token_entries: int = Field(
        default=16_384,
        ge=1,
        description="texts × top_k of one /next-token request (the size of its answer); past it: 413",
    )
    max_logprob_entries: int = Field(
        default=262_144,
        ge=1,
        description=(
            "log-probs in one /v1/completions answer: each returned token's and its `logprobs` alternatives, "
            "every choice counted (tokens × (1 + logprobs)); past it: 413 naming `logprobs`"
        ),
    )
    max_answer_bytes: int = Field(
        default=16_000_000,
        ge=1,
        description=(
            "the size one /v1/completions answer may reach, as estimated before any work from its texts "
            "(echoed prompts, max_tokens of the longest piece), log-prob entries and choices; past it: 413"
        ),
    )
    max_request_rows: int = Field(
        default=32,
        ge=1,
        description=(
            "samples one /v1/completions request has generating at once (prompts × n beyond it run in "
            "turns, a prompt's n together), so that one request never holds the whole generation batch"
        ),
    )
    request_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "deadline of a model request, streams included: past it the work is cancelled and the answer "
            "is 504 (or a final `error` event on a stream). 0: no deadline"
        ),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "on SIGTERM: how long in-flight requests and streams may take to finish before they are ended"
        ),
    )
    start_on_load_error: bool = Field(
        default=False,
        description=(
            "a model that fails to load: start anyway and answer /ready 503 with the reason (default: exit 1)"
        ),
    )

    # -- security and logs (service/auth.py, service/context.py, service/logs.py) --------------------
    api_key: SecretStr | None = Field(
        default=None,
        description="one bearer token every route except /health, /docs and the playground requires",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "more accepted bearer tokens, comma-separated or a JSON list (e.g. one per client, for rotation)"
        ),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "origins allowed to call the API from a browser (CORS), comma-separated; `*` for any. Default: none"
        ),
    )
    log_format: Literal["json", "text"] = Field(default="json", description="json: one object per line")
    log_request_text: bool = Field(
        default=False,
        description=(
            "log the first 2000 characters of each request body (off: logs never contain request text)"
        ),
    )

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _recorded_choice(cls, value: object) -> object:
        """No RNNLM_MODEL_DIRS: the models weights/DEFAULT.json names (a DefaultChoiceError names it)."""
        return default_model_dirs() if value is None else value

    @field_validator("model_dirs", "head_dirs", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _fits_the_engine(self) -> Settings:
        """Refuse at startup what the engine would refuse per request (a 500 on every such request)."""
        if self.max_n > self.max_generation_rows:
            raise ValueError(
                f"RNNLM_MAX_N ({self.max_n}) is more than RNNLM_MAX_GENERATION_ROWS "
                f"({self.max_generation_rows}), the samples the engine decodes together: "
                "lower RNNLM_MAX_N or raise RNNLM_MAX_GENERATION_ROWS"
            )
        self._costs_fit()  # before the engine's own check of the same pair, for the message's names
        self.engine_config()  # the engine's own checks of its settings (EngineConfig.__post_init__)
        return self

    @model_validator(mode="after")
    def _one_body_fits_the_buffer(self) -> Settings:
        """A body of the largest size must fit the bytes buffered across connections, or it never would."""
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"RNNLM_MAX_BUFFERED_BODY_BYTES ({self.max_buffered_body_bytes}) is less than "
                f"RNNLM_MAX_BODY_BYTES ({self.max_body_bytes}): a body of the largest size would never be "
                "accepted; raise RNNLM_MAX_BUFFERED_BODY_BYTES or lower RNNLM_MAX_BODY_BYTES"
            )
        return self

    def _costs_fit(self) -> None:
        """The cost limits must admit what the other limits let through one at a time."""
        if self.max_request_tokens > self.max_tokens_in_flight:
            raise ValueError(
                f"RNNLM_MAX_REQUEST_TOKENS ({self.max_request_tokens}) is more than RNNLM_MAX_TOKENS_IN_FLIGHT "
                f"({self.max_tokens_in_flight}): such a request could never be admitted; lower the first or "
                "raise the second"
            )
        if self.max_request_tokens < self.max_text_chars + 2:
            raise ValueError(
                f"RNNLM_MAX_REQUEST_TOKENS ({self.max_request_tokens}) is less than RNNLM_MAX_TEXT_CHARS + 2 "
                f"({self.max_text_chars + 2}): one text of the allowed length (with <bos> and <eos>) would be "
                "refused; raise RNNLM_MAX_REQUEST_TOKENS or lower RNNLM_MAX_TEXT_CHARS"
            )
        if self.max_logprob_entries < self.max_logprobs + 1:
            raise ValueError(
                f"RNNLM_MAX_LOGPROB_ENTRIES ({self.max_logprob_entries}) is less than RNNLM_MAX_LOGPROBS + 1 "
                f"({self.max_logprobs + 1}): one token with the largest allowed logprobs would be refused; raise "
                "the first or lower the second"
            )
        if self.max_next_token_entries < self.max_top_k:
            raise ValueError(
                f"RNNLM_MAX_NEXT_TOKEN_ENTRIES ({self.max_next_token_entries}) is less than RNNLM_MAX_TOP_K "
                f"({self.max_top_k}): one text with the largest allowed top_k would be refused; raise the "
                "first or lower the second"
            )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_wait_ms=self.batch_wait_ms,
            max_batch_tokens=self.max_batch_tokens,
            max_rows=self.max_generation_rows,
            max_queue=self.engine_queue,
            threads=self.torch_threads or None,
            prefix_sharing=self.prefix_sharing,
            max_request_tokens=self.max_request_tokens,
            max_tokens_in_flight=self.max_tokens_in_flight,
            chunk_positions=self.engine_chunk_positions,
            prefix_cache_bytes=self.prefix_cache_bytes,
        )

    def accepted_keys(self) -> list[str]:
        """Every bearer token the service accepts (empty: authentication is off)."""
        keys = [self.api_key, *self.api_keys] if self.api_key is not None else self.api_keys
        return [k.get_secret_value() for k in keys if k.get_secret_value()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
