"""langchain_tir's errors: a declared class per core error class, also langchain-core's match.

The behaviour through the chat model (a 429 caught as `ModelRateLimitError`...) is tested in
test_chat_models.py; these check the classes themselves, and an older langchain-core.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core import exceptions as lc

from langchain_tir import UnsupportedContentError, _errors
from langchain_tir._errors import _DUAL, InvalidToolChoiceError, as_langchain_error
from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextLengthExceededError,
    InputError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    TIRError,
)

ROOT = Path(__file__).resolve().parents[2]

# Each core class and langchain-core's match (docs/errors.md, docs/langchain.md).
MATCH: dict[type[TIRError], type[Exception]] = {
    ContextLengthExceededError: lc.ContextOverflowError,
    BadRequestError: lc.ModelInvalidRequestError,
    AuthenticationError: lc.ModelAuthenticationError,
    PermissionDeniedError: lc.ModelPermissionDeniedError,
    NotFoundError: lc.ModelNotFoundError,
    RateLimitError: lc.ModelRateLimitError,
    ServerError: lc.ModelAPIError,
    StreamInterruptedError: lc.ModelAPIError,
    APITimeoutError: lc.ModelTimeoutError,
    APIConnectionError: lc.ModelConnectionError,
    InvalidResponseError: lc.ModelAPIError,
}
CORE = list(MATCH)


def test_each_core_error_class_has_its_declared_dual() -> None:
    assert set(_DUAL) == set(MATCH)
    for core, dual in _DUAL.items():
        # Exactly the two, in this order: the core class first, as before.
        assert dual.__bases__ == (core, MATCH[core])
        assert dual.__mro__[1] is core
        # Shown under the core class's name; found by pickle under its own.
        assert dual.__name__ == core.__name__
        assert dual.__qualname__ == f"LangChain{core.__name__}"
        assert getattr(_errors, dual.__qualname__) is dual
        assert dual.__module__ == "langchain_tir._errors"
        assert dual.__doc__


@pytest.mark.parametrize("core", CORE, ids=[c.__name__ for c in CORE])
def test_an_error_becomes_its_dual_in_place_and_pickles_as_it(core: type[TIRError]) -> None:
    error = core("it failed", status_code=500, request_id="req-7")
    assert as_langchain_error(error) is error
    assert type(error) is _DUAL[core]
    assert isinstance(error, core) and isinstance(error, MATCH[core])
    assert repr(error) == f"{core.__name__}('it failed')"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is _DUAL[core]
    assert (copy.message, copy.status_code, copy.request_id) == ("it failed", 500, "req-7")


@pytest.mark.parametrize(
    "error",
    [
        ConfigurationError("no key"),
        InputError("empty"),
        UnsupportedContentError("an image"),
        TIRError("other"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_without_a_match_keeps_its_class(error: TIRError) -> None:
    before = type(error)
    as_langchain_error(error)
    assert type(error) is before


def test_a_dual_error_is_never_dualled_again() -> None:
    error = as_langchain_error(RateLimitError("slow down", status_code=429))
    assert type(as_langchain_error(error)) is _DUAL[RateLimitError]


def test_an_invalid_tool_choice_is_a_bad_request_and_a_value_error() -> None:
    assert InvalidToolChoiceError.__bases__ == (_DUAL[BadRequestError], ValueError)
    error = InvalidToolChoiceError("no such tool")
    assert isinstance(error, BadRequestError)
    assert isinstance(error, lc.ModelInvalidRequestError)
    assert isinstance(error, ValueError)
    assert type(pickle.loads(pickle.dumps(error))) is InvalidToolChoiceError


def test_an_older_langchain_core_leaves_the_classes_it_lacks_out() -> None:
    # langchain-core 1.4 (the floor) predates its model errors; ContextOverflowError came
    # first. The module, loaded afresh against such a core: the errors without a match keep
    # their own class; the classes are still declared, and InvalidToolChoiceError still works.
    script = f"""
import importlib.util
import langchain_tir  # langchain-core's own modules first: they import the classes too
from langchain_core import exceptions
for name in dir(exceptions):
    if name.startswith("Model"):
        delattr(exceptions, name)
path = {str(ROOT / "langchain_tir" / "_errors.py")!r}
spec = importlib.util.spec_from_file_location("old_core_errors", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from tir_transport import ContextLengthExceededError, RateLimitError, BadRequestError
print(sorted(core.__name__ for core in module._DUAL))
error = module.as_langchain_error(RateLimitError("slow down"))
print(type(error) is RateLimitError)
overflow = module.as_langchain_error(ContextLengthExceededError("too long"))
print(isinstance(overflow, exceptions.ContextOverflowError))
choice = module.InvalidToolChoiceError("no such tool")
print(isinstance(choice, BadRequestError) and isinstance(choice, ValueError))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:4] == [
        "['ContextLengthExceededError']",
        "True",
        "True",
        "True",
    ]
