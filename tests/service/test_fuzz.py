"""Fuzzing: the service against its own OpenAPI schema (schemathesis, in process), hostile raw
bodies, and the library's tokenizer and scoring on arbitrary text (hypothesis).

What must hold: never a 5xx, every answer matches the documented schema and status codes, every
error has the one JSON shape naming the field, no traceback or server path in any body.

``RNNLM_FUZZ_EXAMPLES`` sets the examples per operation (CI: 25; ``make reliability``: 500).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from model.inference.scoring import ScoreOptions, next_token_distribution, score_candidates
from model.models.loading import load_model
from model.text.tokenizer import Tokenizer
from service.app import create_app
from service.settings import Settings

from ..conftest import TINY_LINES

EXAMPLES = int(os.environ.get("RNNLM_FUZZ_EXAMPLES", "25"))
LIMITS = dict(
    max_body_bytes=20_000,
    max_text_chars=200,
    max_candidates=8,
    max_batch_texts=4,
    max_top_k=20,
    max_new_tokens=16,
    max_n=2,
    max_stop_strings=3,
    max_sweep=8,
    sse_ping_s=0,
)
LEAKS = ("Traceback", "/work/", "/tmp/", "site-packages", '.py"', 'File "')


def assert_clean(status: int, body: bytes, content_type: str) -> None:
    """Never a 5xx; an error has the one shape; nothing internal leaks."""
    assert status < 500, body[:500]
    text = body.decode("utf-8", "replace")
    assert not any(leak in text for leak in LEAKS), text[:500]
    if status >= 400:
        assert content_type.startswith("application/json"), content_type
        err = json.loads(body)["error"]
        assert set(err) == {"type", "message", "field", "status", "request_id"} and err["status"] == status
        if err["field"] not in (None, "body"):
            assert f"`{err['field']}`" in err["message"] or err["field"] == "Authorization"


# -- schema-driven (schemathesis) ----------------------------------------------------------------------
# The schema is the app's own; the app loads its model at the first request (schemathesis runs its
# lifespan), by which time the fixture below has written the model where the settings point.
FUZZ_MODEL = Path(tempfile.mkdtemp(prefix="rnnlm-fuzz-")) / "tiny-lstm"
APP = create_app(Settings(model_dirs=[str(FUZZ_MODEL)], **LIMITS))
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)
# 413 is how a configured limit rejects a value past the schema's maximum (documented).
schema.config.checks.negative_data_rejection.expected_statuses = ["400", "404", "405", "413", "415", "422"]


@pytest.fixture(scope="module", autouse=True)
def fuzz_model(tiny_model_dir):
    shutil.copytree(tiny_model_dir, FUZZ_MODEL, dirs_exist_ok=True)
    yield
    shutil.rmtree(FUZZ_MODEL.parent, ignore_errors=True)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_against_its_schema(case):
    response = case.call()
    # Schema-valid bodies are accepted, except where a rule JSON Schema cannot state is broken:
    # `external_scores` must have one value per candidate (422 naming it). Checked here instead.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    assert_clean(response.status_code, response.content, (response.headers.get("content-type") or [""])[0])
    meta = case.meta
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE and response.status_code >= 400:
        err = response.json()["error"]
        # and rules that depend on what is served: /score's `direction` needs a backward model (none
        # here), `weights` names served models and excludes the single-model knobs; /decode takes one
        # of slots and lattice, nbest <= beam, a well-formed lattice, a search within its cost
        known = {(422, "external_scores"), (404, "model"), (422, "direction"), (422, "model")}
        field = str(err["field"])
        decode_rules = ("body", "nbest", "acoustic_scale", "lattice_lm_weight", "lattice", "slots")
        assert (
            (response.status_code, field) in known
            or field.startswith("weights")
            or (case.path == "/decode" and field.split(".")[0] in decode_rules)
            or (
                response.status_code == 422
                and field
                in ("lm_weight", "length_bonus", "length_unit", "sweep", "normalize", "backward_weight")
            )
        ), response.text


# -- hostile raw bodies --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_model_dir):
    settings_ = Settings(
        model_dirs=[str(tiny_model_dir)],
        max_body_bytes=2_000_000,
        max_text_chars=10_000,
        max_candidates=100,
        sse_ping_s=0,
    )
    with TestClient(create_app(settings_)) as c:
        yield c


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


MB = 1_000_000
# (path, raw body, expected status, field of the error; None: a success)
HOSTILE = [
    ("/score", b'{"candidates": ["a\xff\xfe"]}', 422, "body"),  # invalid UTF-8
    ("/score", b'\xef\xbb\xbf{"candidates": ["a"]}', 200, None),  # a UTF-8 byte-order mark is fine
    ("/score", b'{"candidates": ["ok", "a\\ud800b"]}', 422, "candidates.1"),  # lone surrogates
    ("/score", b'{"candidates": ["a"], "context": "\\udfff"}', 422, "context"),
    ("/next-token", b'{"text": "\\ud83d"}', 422, "text"),
    ("/next-token", b'{"text": ["a", "\\udc00"]}', 422, "text.1"),
    ("/generate", b'{"prompt": "\\ud800"}', 422, "prompt"),
    ("/generate", b'{"prompt": "a", "stop": ["\\ud800"]}', 422, "stop.0"),
    ("/score", b'{"candidates": ["a"], "model": "\\ud800"}', 422, "model"),
    ("/score", b'{"candidates": ["\\ud83d\\ude00 paired is fine"]}', 200, None),
    ("/score", b'{"candidates": ["a\\u0000b", "\\u0000"]}', 200, None),  # NUL bytes are text
    ("/generate", b'{"prompt": "\\u0000", "stop": ["\\u0000"], "max_new_tokens": 3}', 200, None),
    ("/score", json.dumps({"candidates": ["x" * MB]}).encode(), 413, "candidates.0"),  # 1 MB strings
    ("/next-token", json.dumps({"text": "字" * (MB // 2)}, ensure_ascii=False).encode(), 413, "text"),
    ("/score", json.dumps({"candidates": ["a"], "context": "y" * 3 * MB}).encode(), 413, "body"),
    ("/score", deep(100_000), 422, "body"),  # deeply nested JSON
    ("/score", b'{"candidates": ' + deep(50) + b"}", 422, "candidates.0"),
    ("/score", b'{"candidates": ["a"], "lm_weight": NaN}', 422, "lm_weight"),  # NaN / Infinity
    ("/score", b'{"candidates": ["a"], "length_bonus": -Infinity}', 422, "length_bonus"),
    ("/score", b'{"candidates": ["a"], "external_scores": [Infinity]}', 422, "external_scores.0"),
    ("/generate", b'{"temperature": NaN}', 422, "temperature"),
    ("/generate", b'{"top_p": Infinity}', 422, "top_p"),
    ("/score", b'{"candidates": ["a"], "lm_weight": 1e999}', 422, "lm_weight"),
    ("/generate", b'{"temperature": 5e-324, "max_new_tokens": 3}', 200, None),  # tiny: greedy, no NaN
    ("/generate", b'{"repetition_penalty": 1e-300}', 422, "repetition_penalty"),
    ("/generate", b'{"temperature": 0.0001, "repetition_penalty": 0.0001, "max_new_tokens": 3}', 200, None),
    ("/next-token", b'{"text": "a", "top_k": -1}', 422, "top_k"),  # negative and huge numbers
    ("/next-token", b'{"text": "a", "top_k": 100000000000000000000000000000}', 413, "top_k"),
    ("/generate", b'{"max_new_tokens": -5}', 422, "max_new_tokens"),
    ("/generate", b'{"n": 1' + b"0" * 100 + b"}", 413, "n"),
    ("/generate", b'{"seed": 18446744073709551616}', 422, "seed"),
    ("/generate", b'{"seed": -1}', 422, "seed"),
    ("/score", b'{"candidates": ["a"], "lm_weight": ' + b"9" * 5000 + b"}", 422, "body"),
    ("/generate", b'{"max_new_tokens": 2.5}', 422, "max_new_tokens"),
    ("/score", b'{"candidates": "not a list"}', 422, "candidates"),  # wrong types
    ("/score", b'{"candidates": {"a": 1}}', 422, "candidates"),
    ("/score", b'{"candidates": [null]}', 422, "candidates.0"),
    ("/score", b'{"candidates": ["a"], "per_token": "maybe"}', 422, "per_token"),
    ("/next-token", b'{"text": 5}', 422, "text"),
    ("/next-token", b'{"text": [["nested"]]}', 422, "text"),
    ("/generate", b'{"stop": 7}', 422, "stop"),
    ("/generate", b'{"stream": "sometimes"}', 422, "stream"),
    ("/score", b'"just a string"', 422, "body"),
    ("/score", b"null", 422, "body"),
    ("/score", b"[]", 422, "body"),
    ("/score", b"", 422, "body"),
    ("/score", b"{", 422, "body"),
    ("/score", b'{"candidates": ["a"]} trailing', 422, "body"),
    ("/score", json.dumps({f"k{i}": i for i in range(10_000)}).encode(), 422, "candidates"),
]


@pytest.mark.parametrize(
    ("path", "raw", "status", "field"),
    HOSTILE,
    ids=[f"{i}-{p}-{s}" for i, (p, _, s, _f) in enumerate(HOSTILE)],
)
def test_hostile_bodies_get_a_clean_answer(client, path, raw, status, field):
    r = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_clean(r.status_code, r.content, r.headers.get("content-type", ""))
    assert r.status_code == status, r.text[:500]
    if field is not None:
        assert r.json()["error"]["field"] == field, r.text[:500]
    assert len(r.content) < 20_000  # an error never echoes a huge input back


def test_nul_bytes_come_back_exactly(client):
    r = client.post("/score", json={"candidates": ["a\x00b"]})
    assert r.json()["results"][0]["text"] == "a\x00b"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/score"),
        ("PUT", "/generate"),
        ("DELETE", "/health"),
        ("GET", "/../../etc/passwd"),
        ("GET", "/static/%2e%2e/%2e%2e/etc/passwd"),
        ("GET", "/%00"),
        ("GET", "/" + "a" * 8000),
        ("POST", "/metrics"),
    ],
)
def test_odd_methods_and_paths(client, method, path):
    r = client.request(method, path)
    assert_clean(r.status_code, r.content, r.headers.get("content-type", ""))
    assert r.status_code in (404, 405)


# -- the library on arbitrary text (hypothesis) --------------------------------------------------------
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40)
QUICK = settings(
    max_examples=max(20, EXAMPLES * 2),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.mark.parametrize("kind", ["char", "word"])
@QUICK
@given(text=ANY_TEXT)
def test_tokenizers_never_fail_on_any_text(kind, text):
    tok = Tokenizer.build([*TINY_LINES, "he said hello world"], kind=kind)
    enc = tok.encode(text)
    assert len(enc.ids) == len(enc.tokens) == len(tok.split(text))
    assert all(0 <= i < tok.vocab_size for i in enc.ids)
    assert enc.oov == sum(1 for i in enc.ids if i == 1)
    assert isinstance(tok.decode(enc.ids), str)
    if kind == "char" and enc.oov == 0:
        assert tok.decode(enc.ids) == text


@QUICK
@given(
    candidates=st.lists(ANY_TEXT, min_size=1, max_size=4),
    context=ANY_TEXT,
    bos=st.booleans(),
    eos=st.booleans(),
    normalize=st.sampled_from(["none", "token"]),
)
def test_scoring_never_fails_and_ranks_every_candidate(lm, candidates, context, bos, eos, normalize):
    options = ScoreOptions(context=context, bos=bos, eos=eos, normalize=normalize)
    ranking = score_candidates(lm, candidates, options)
    assert [r.text for r in ranking.results] == candidates
    assert sorted(ranking.ranking) == list(range(len(candidates)))
    for place, i in enumerate(ranking.ranking, start=1):
        assert ranking.results[i].rank == place
    for r in ranking.results:
        assert math.isfinite(r.logprob) and r.logprob <= 1e-6 and math.isfinite(r.score)
        assert r.num_tokens == len(r.token_logprobs) == len(r.tokens)
        assert math.isclose(math.fsum(r.token_logprobs), r.logprob, abs_tol=1e-9)
        assert r.perplexity is None if r.num_tokens == 0 else r.perplexity >= 1 - 1e-9


@QUICK
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=4), top_k=st.integers(1, 50))
def test_next_token_never_fails_on_any_text(lm, texts, top_k):
    for text, nt in zip(texts, next_token_distribution(lm, texts, top_k), strict=True):
        assert nt.tokens == lm.tokenizer.encode(text).tokens
        probs = [t.prob for t in nt.next]
        assert 1 <= len(probs) <= top_k and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-6 and 0 <= nt.entropy <= math.log(lm.vocab_size) + 1e-6
