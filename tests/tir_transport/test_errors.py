from __future__ import annotations

import json
import pickle

import pytest

from tir_transport import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContextLengthExceededError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    StreamInterruptedError,
    TIRError,
)
from tir_transport._errors import error_from_response


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (408, RequestTimeoutError),
        (409, ConflictError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (418, APIStatusError),
    ],
)
def test_status_table(status: int, cls: type[TIRError]) -> None:
    error = error_from_response(status, b'{"error":{"message":"m"}}')
    assert type(error) is cls
    assert error.status_code == status
    assert isinstance(error, TIRError)


def test_hierarchy() -> None:
    assert issubclass(ContextLengthExceededError, BadRequestError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(StreamInterruptedError, TIRError)
    for cls in (AuthenticationError, RateLimitError, ServerError, APIConnectionError):
        assert issubclass(cls, TIRError)


@pytest.mark.parametrize(
    "body",
    [
        {"object": "error", "message": "bad temp", "type": "BadRequestError", "code": 400},
        {"error": {"message": "bad temp", "type": "BadRequestError", "code": 400}},
        {"error": "bad temp"},
        {"detail": "bad temp"},
        {"message": "bad temp"},
    ],
    ids=["vllm-flat", "vllm-nested", "error-string", "fastapi-detail", "gateway-message"],
)
def test_message_from_every_known_shape(body: dict[str, object]) -> None:
    error = error_from_response(400, json.dumps(body).encode())
    assert error.message == "bad temp"
    assert "bad temp" in str(error)
    assert "HTTP 400" in str(error)


def test_plain_text_gateway_reply() -> None:
    error = error_from_response(502, b"Bad Gateway")
    assert isinstance(error, ServerError)
    assert error.message == "Bad Gateway"


def test_empty_body() -> None:
    assert "empty body" in error_from_response(503, b"").message


def test_validation_detail_list_is_quoted_as_json() -> None:
    body = {"detail": [{"loc": ["body", "temperature"], "msg": "too big"}]}
    assert "too big" in error_from_response(422, json.dumps(body).encode()).message


def test_context_length_is_recognised_from_the_400_message() -> None:
    body = {
        "object": "error",
        "message": "This model's maximum context length is 8192 tokens. However, you requested "
        "9000 tokens (8000 in the messages, 1000 in the completion).",
        "code": 400,
    }
    error = error_from_response(400, json.dumps(body).encode())
    assert type(error) is ContextLengthExceededError
    assert "8192" in error.message


def test_request_id_from_headers() -> None:
    error = error_from_response(500, b"x", {"x-request-id": "req-42"})
    assert error.request_id == "req-42"
    assert "req-42" in str(error)


def test_huge_body_is_capped() -> None:
    error = error_from_response(502, b"<html>" + b"x" * 100_000)
    assert len(error.message) < 1100
    assert "more characters" in error.message


def test_secret_echoed_by_a_gateway_is_scrubbed() -> None:
    body = b"bad header: Authorization: Bearer sk-secret-123"
    error = error_from_response(401, body, secret="sk-secret-123")
    assert "sk-secret-123" not in str(error)
    assert "sk-secret-123" not in repr(error.body)


def test_errors_pickle_with_their_fields() -> None:
    error = error_from_response(429, b'{"error":{"message":"slow down"}}', {"x-request-id": "r"})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError
    assert (copy.message, copy.status_code, copy.request_id) == ("slow down", 429, "r")


def test_empty_message_names_the_error_type() -> None:
    body = b'{"error":{"message":"","type":"internal_server_error","param":null,"code":null}}'
    error = error_from_response(500, body)
    assert error.message == "internal_server_error (the server gave no message)"
