"""Checks that hold for every adapter class alike: the same promise, four classes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from langchain_tir import ChatTIRLlama, TIREmbeddings
from llama_index_tir import TIREmbedding, TIRLlamaLLM

CLASSES: list[type[Any]] = [ChatTIRLlama, TIREmbeddings, TIRLlamaLLM, TIREmbedding]
IDS = [c.__name__ for c in CLASSES]
# Long and JWT-like: a validation error that quoted the arguments would show its tail.
KEY = "eyJhbGciOiJSUzI1NiJ9.payload.signature-0123456789abcdef"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize(
    "bad",
    [{"timeout": -1}, {"max_retries": "many"}, {"project_id": 1.5}, {"max_in_flight": 0}],
    ids=["timeout", "max_retries", "project_id", "max_in_flight"],
)
def test_a_validation_error_never_shows_the_key(cls: type[Any], bad: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)) as caught:
        cls(**bad, api_key=KEY)  # the key last: where a quoted dict would end
    text = str(caught.value) + repr(caught.value)
    assert KEY not in text and "signature" not in text


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_refused_argument_never_shows_the_key(cls: type[Any]) -> None:
    for bad in ({"temprature": 0}, {"n": 2}):
        with pytest.raises(ValidationError) as caught:
            cls(**bad, api_key=KEY)
        assert "signature" not in str(caught.value)


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_unknown_arguments_are_request_fields_or_errors(cls: type[Any]) -> None:
    extra = "model_kwargs" if cls is ChatTIRLlama else "additional_kwargs"
    with pytest.warns(UserWarning, match=f"'top_k' is not an argument of {cls.__name__}"):
        llm = cls(top_k=5)
    assert getattr(llm, extra) == {"top_k": 5}
    with pytest.raises(ValidationError, match="did you mean 'temperature'"):
        cls(temprature=0)
