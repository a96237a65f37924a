"""Make tir_transport errors also instances of langchain-core's matching exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

# Most specific first; langchain-core names that an older pinned core lacks are skipped.
_PAIRS: list[tuple[type[TIRError], str]] = [
    (ContextLengthExceededError, "ContextOverflowError"),
    (BadRequestError, "ModelInvalidRequestError"),
    (AuthenticationError, "ModelAuthenticationError"),
    (PermissionDeniedError, "ModelPermissionDeniedError"),
    (NotFoundError, "ModelNotFoundError"),
    (RateLimitError, "ModelRateLimitError"),
    (ServerError, "ModelAPIError"),
    (StreamInterruptedError, "ModelAPIError"),
    (APITimeoutError, "ModelTimeoutError"),
    (APIConnectionError, "ModelConnectionError"),
    (InvalidResponseError, "ModelAPIError"),
]


def _dual_classes() -> dict[type[TIRError], type[TIRError]]:
    classes: dict[type[TIRError], type[TIRError]] = {}
    for tir_class, lc_name in _PAIRS:
        lc_class = getattr(lc_exceptions, lc_name, None)
        if lc_class is None:
            continue
        qualname = f"LangChain{tir_class.__name__}"
        dual = type(
            tir_class.__name__,
            (tir_class, lc_class),
            {
                "__module__": __name__,
                "__qualname__": qualname,
                "__doc__": f"{tir_class.__doc__} Also a `langchain_core.exceptions.{lc_name}`.",
            },
        )
        # A module attribute, so that pickle finds the class (errors cross process pools).
        globals()[qualname] = dual
        classes[tir_class] = dual
    return classes


_DUAL = _dual_classes()


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


# The langchain-core-compatible BadRequestError (langchain-core lacking the class: ours alone).
_BAD_REQUEST: type[TIRError] = _DUAL.get(BadRequestError, BadRequestError)


class InvalidToolChoiceError(_BAD_REQUEST, ValueError):  # type: ignore[valid-type,misc]
    """A `tool_choice` naming no bound tool, refused before any request is sent.

    A `BadRequestError` (and langchain-core's `ModelInvalidRequestError`), as the server's
    400 for it is with ChatOpenAI; also a `ValueError`, as it was before.
    """
