"""Both APIs' sampling fields are made from the library's one definition of each parameter
(model.inference: SAMPLING_PARAMS, REQUEST_PARAMS): the same defaults and bounds, under each
protocol's names, so a bound changes in one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model.inference.generation import REQUEST_PARAMS, GenerationRequest
from model.inference.sampling import SAMPLING_PARAMS, SamplingParams
from service.compat_schemas import CompletionRequest
from service.schemas import GenerateRequest, sampling_field

# request field -> the library's parameter, per API
NATIVE = {name: name for name in [*SAMPLING_PARAMS, "n", "max_new_tokens"]}
OPENAI = {**{name: name for name in [*SAMPLING_PARAMS, "n"]}, "max_tokens": "max_new_tokens"}
STRICTER = {(GenerateRequest, "max_new_tokens"): {"minimum": 1}}  # /generate always generates
OWN_DEFAULT = {(CompletionRequest, "max_tokens"): 16}  # OpenAI's


def library_default(name: str) -> object:
    return getattr(SamplingParams() if name in SAMPLING_PARAMS else GenerationRequest(), name)


def schema_bounds(prop: dict) -> dict:
    return {k: prop[k] for k in ("minimum", "exclusiveMinimum", "maximum") if k in prop}


@pytest.mark.parametrize(("model", "fields"), [(GenerateRequest, NATIVE), (CompletionRequest, OPENAI)])
def test_each_sampling_field_has_the_library_default_and_bounds(model, fields):
    props = model.model_json_schema()["properties"]
    for field, name in fields.items():
        spec = {**SAMPLING_PARAMS, **REQUEST_PARAMS}[name]
        want = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum"}
        bounds = {want[k]: v for k, v in spec.bounds().items()} | STRICTER.get((model, field), {})
        assert schema_bounds(_plain(props[field])) == bounds, field
        assert model.model_fields[field].default == OWN_DEFAULT.get((model, field), library_default(name))
        assert props[field]["description"], field


def _plain(prop: dict) -> dict:
    """An optional field's schema is anyOf [the type, null]: its bounds are on the type."""
    for option in prop.get("anyOf", []):
        if option.get("type") != "null":
            return option
    return prop


@pytest.mark.parametrize("name", list(SAMPLING_PARAMS))
def test_values_the_apis_accept_at_a_bound_the_library_accepts_too(name):
    spec = SAMPLING_PARAMS[name]
    for bound in (spec.ge, spec.le):
        if bound is None:
            continue
        body = GenerateRequest.model_validate({name: bound})
        openai = CompletionRequest.model_validate({"prompt": "a", name: bound})
        assert getattr(body, name) == getattr(openai, name)
        SamplingParams(**{name: getattr(body, name)})  # no ValueError


def test_a_field_may_be_stricter_than_the_library_never_looser():
    sampling_field("n", ge=2)
    with pytest.raises(ValueError, match="looser"):
        sampling_field("top_p", le=2.0)
    with pytest.raises(ValueError, match="looser"):
        sampling_field("temperature", ge=-1.0)


def test_both_apis_make_a_tiny_temperature_greedy_as_the_library_does():
    assert GenerateRequest(temperature=1e-300).temperature == 0.0
    assert CompletionRequest(prompt="a", temperature=1e-300).temperature == 0.0
    assert SamplingParams(temperature=1e-300).temperature == 0.0
    with pytest.raises(ValidationError, match="temperature"):
        CompletionRequest(prompt="a", temperature=-0.5)
