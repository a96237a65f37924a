"""Make tir_transport errors also instances of langchain-core's matching exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from langchain_core import exceptions as lc_exceptions

from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ContextLengthExceededError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    TIRError,
)


class _Absent(Exception):
    """Stands in for a langchain-core class that the installed langchain-core lacks."""


if TYPE_CHECKING:
    from langchain_core.exceptions import (
        ContextOverflowError,
        ModelAPIError,
        ModelAuthenticationError,
        ModelConnectionError,
        ModelInvalidRequestError,
        ModelNotFoundError,
        ModelPermissionDeniedError,
        ModelRateLimitError,
        ModelTimeoutError,
    )
else:
    # The floor, langchain-core 1.4, predates some of these (its model errors came later): a
    # missing one is `_Absent`, which nothing raises or catches, and `_dual` then leaves the
    # core class out of `_DUAL`, so that its errors keep their own class.
    ContextOverflowError = getattr(lc_exceptions, "ContextOverflowError", _Absent)
    ModelAPIError = getattr(lc_exceptions, "ModelAPIError", _Absent)
    ModelAuthenticationError = getattr(lc_exceptions, "ModelAuthenticationError", _Absent)
    ModelConnectionError = getattr(lc_exceptions, "ModelConnectionError", _Absent)
    ModelInvalidRequestError = getattr(lc_exceptions, "ModelInvalidRequestError", _Absent)
    ModelNotFoundError = getattr(lc_exceptions, "ModelNotFoundError", _Absent)
    ModelPermissionDeniedError = getattr(lc_exceptions, "ModelPermissionDeniedError", _Absent)
    ModelRateLimitError = getattr(lc_exceptions, "ModelRateLimitError", _Absent)
    ModelTimeoutError = getattr(lc_exceptions, "ModelTimeoutError", _Absent)

# Each core error class -> the class that is both it and langchain-core's match (see _dual).
_DUAL: dict[type[TIRError], type[TIRError]] = {}

_E = TypeVar("_E", bound=TIRError)


def _dual(cls: type[_E]) -> type[_E]:
    """Register `cls`, declared as `(core class, langchain-core class)`, as the core's dual.

    The mapping is read from the bases, so the table cannot disagree with the classes.
    """
    core, langchain = cls.__bases__
    if not issubclass(core, TIRError):
        raise TypeError(f"{cls.__qualname__}: the first base must be a TIRError")
    # Named as the core class (what a repr, a log or LangSmith shows); the qualified name is
    # the module attribute, which pickle looks the class up by (errors cross process pools).
    cls.__name__ = core.__name__
    if langchain is not _Absent:
        _DUAL[core] = cls
    return cls


@_dual
class LangChainContextLengthExceededError(ContextLengthExceededError, ContextOverflowError):
    """A `ContextLengthExceededError`; also a `langchain_core.exceptions.ContextOverflowError`."""


@_dual
class LangChainBadRequestError(BadRequestError, ModelInvalidRequestError):
    """A `BadRequestError`; also a `langchain_core.exceptions.ModelInvalidRequestError`."""


@_dual
class LangChainAuthenticationError(AuthenticationError, ModelAuthenticationError):
    """An `AuthenticationError`; also a `langchain_core.exceptions.ModelAuthenticationError`."""


@_dual
class LangChainPermissionDeniedError(PermissionDeniedError, ModelPermissionDeniedError):
    """A `PermissionDeniedError`; also a `langchain_core.exceptions.ModelPermissionDeniedError`."""


@_dual
class LangChainNotFoundError(NotFoundError, ModelNotFoundError):
    """A `NotFoundError`; also a `langchain_core.exceptions.ModelNotFoundError`."""


@_dual
class LangChainRateLimitError(RateLimitError, ModelRateLimitError):
    """A `RateLimitError`; also a `langchain_core.exceptions.ModelRateLimitError`."""


@_dual
class LangChainServerError(ServerError, ModelAPIError):
    """A `ServerError`; also a `langchain_core.exceptions.ModelAPIError`."""


@_dual
class LangChainStreamInterruptedError(StreamInterruptedError, ModelAPIError):
    """A `StreamInterruptedError`; also a `langchain_core.exceptions.ModelAPIError`."""


@_dual
class LangChainAPITimeoutError(APITimeoutError, ModelTimeoutError):
    """An `APITimeoutError`; also a `langchain_core.exceptions.ModelTimeoutError`."""


@_dual
class LangChainAPIConnectionError(APIConnectionError, ModelConnectionError):
    """An `APIConnectionError`; also a `langchain_core.exceptions.ModelConnectionError`."""


@_dual
class LangChainInvalidResponseError(InvalidResponseError, ModelAPIError):
    """An `InvalidResponseError`; also a `langchain_core.exceptions.ModelAPIError`."""


def as_langchain_error(error: TIRError) -> TIRError:
    """Give `error` the class that is both its own and langchain-core's match, in place.

    In place, so that the object keeps its message, status, request id, cause and traceback.
    """
    dual = _DUAL.get(type(error))
    if dual is not None:
        # Both are plain Exception subclasses (same layout), so the class may change.
        error.__class__ = dual
    return error


@contextmanager
def langchain_errors() -> Iterator[None]:
    """Re-raise tir_transport errors as their LangChain-compatible classes."""
    try:
        yield
    except TIRError as e:
        as_langchain_error(e)
        raise


class InvalidToolChoiceError(LangChainBadRequestError, ValueError):
    """A `tool_choice` naming no bound tool, refused before any request is sent.

    A `BadRequestError` (and langchain-core's `ModelInvalidRequestError`), as the server's
    400 for it is with ChatOpenAI; also a `ValueError`, as it was before.
    """
