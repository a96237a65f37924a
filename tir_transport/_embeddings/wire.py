"""The OpenAI embeddings wire format as vLLM speaks it: payloads in, vectors out. Pure code."""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import InvalidResponseError, TIRError, check_texts, quote
from .._usage import Usage

__all__ = [
    "EmbeddingsReply",
    "EncodingFormat",
    "build_embeddings_payload",
    "check_inputs",
    "decode_base64",
    "is_encoding_rejection",
    "parse_embeddings",
]

EncodingFormat = Literal["base64", "float"]


def check_inputs(texts: Sequence[Any]) -> None:
    """Refuse what no embedding server answers well, naming the caller's index.

    An empty (or blank) string has no meaning to embed: OpenAI's API rejects it, and a model
    that accepts it returns the vector of its special tokens alone, silently useless in a
    vector store. Anything but a str is a caller's mistake.

    Raises:
        InputError: a text that is not a str, or is empty or blank.
    """
    check_texts(
        texts,
        "text",
        "embed",
        "an embedding of it means nothing",
        "[t for t in texts if t.strip()]",
    )


def build_embeddings_payload(
    texts: Sequence[str],
    model: str,
    *,
    encoding_format: EncodingFormat = "base64",
    dimensions: int | None = None,
    truncate_prompt_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of one embeddings request; only what is set is sent.

    Args:
        texts: the inputs of this request (one batch).
        model: the model's API name.
        encoding_format: `"base64"` (little-endian float32, a third of the bytes) or `"float"`.
        dimensions: ask for shorter vectors (only models that support it).
        truncate_prompt_tokens: vLLM's opt-in to cut each input to this many tokens.
        extra_body: other fields, merged in last.
    """
    payload: dict[str, Any] = {"model": model, "input": list(texts)}
    payload["encoding_format"] = encoding_format
    optional = {"dimensions": dimensions, "truncate_prompt_tokens": truncate_prompt_tokens}
    payload.update((name, value) for name, value in optional.items() if value is not None)
    payload.update(extra_body or {})
    return payload


_BIG_ENDIAN = sys.byteorder == "big"


def decode_base64(data: str) -> list[float]:
    """Decode a base64 vector (little-endian float32) without a Python loop per float."""
    values = array("f")
    values.frombytes(base64.b64decode(data, validate=True))
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tolist()


@dataclass(frozen=True, slots=True)
class EmbeddingsReply:
    """The vectors of one request, in input order, and what the server said of it."""

    vectors: list[list[float]]
    model: str | None
    usage: Usage | None


def _bad(message: str, data: Any) -> InvalidResponseError:
    return InvalidResponseError(f"{message}; the reply began: {quote(repr(data), 200)}")


def parse_embeddings(data: Any, count: int) -> EmbeddingsReply:
    """Read an embeddings reply for `count` inputs: every vector, each in its input's place.

    Floats and base64 are both read (a server may ignore `encoding_format`).

    Raises:
        InvalidResponseError: not the embeddings format; a count other than `count`; an index
            missing, repeated or out of range; vectors of different lengths. Never a shorter
            list: a vector that does not belong to its text is worse than no vector.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise _bad("the reply is not an embeddings list (no 'data' array)", data)
    items: list[Any] = data["data"]
    if len(items) != count:
        raise _bad(f"the server sent {len(items)} vectors for {count} texts", data)
    vectors: list[list[float] | None] = [None] * count
    try:
        for item in items:
            index = item.get("index")
            # (A bool is an int to Python: `true` would read as index 1.)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise _bad(f"a vector has no valid index ({index!r}) for {count} texts", item)
            if vectors[index] is not None:
                raise _bad(f"two vectors have index {index}", item)
            embedding = item["embedding"]
            if isinstance(embedding, str):
                vectors[index] = decode_base64(embedding)
            elif isinstance(embedding, list):
                # Numbers only (a null, a string or a nested list is no vector): checked in C.
                array("d", embedding)
                vectors[index] = embedding
            else:
                raise _bad("a vector is neither a list of floats nor base64", item)
    except TIRError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error) as e:
        raise _bad(f"an item of the reply cannot be read ({type(e).__name__}: {e})", data) from e
    done: list[list[float]] = vectors  # type: ignore[assignment]  # every slot is filled above
    width = len(done[0]) if done else 0
    if any(len(v) != width for v in done):
        raise _bad("the vectors have different lengths", data)
    if done and not width:
        raise _bad("the vectors are empty", data)
    usage = data.get("usage")
    return EmbeddingsReply(
        done,
        data.get("model") if isinstance(data.get("model"), str) else None,
        Usage.from_openai(usage) if isinstance(usage, Mapping) else None,
    )


def is_encoding_rejection(error: TIRError) -> bool:
    """Whether the server refused `encoding_format: "base64"` (then floats are asked for)."""
    status = error.status_code
    if status not in (400, 422, 500):
        return False
    message = error.message.lower()
    return "encoding_format" in message or "base64" in message
