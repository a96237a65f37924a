"""Property tests: decoding and parsing do not depend on how the bytes were cut."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tir_transport import ChatChunk, TIRError
from tir_transport._chat.wire import parse_chunk
from tir_transport._sse import SSEDecoder

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # any character a model may write
    max_size=12,
)
_chunk = st.fixed_dictionaries(
    {
        "id": st.just("chat-1"),
        "model": st.just("llama3_1_8b_instruct"),
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "index": st.just(0),
                    "delta": st.fixed_dictionaries({"content": _text}),
                    "finish_reason": st.none() | st.sampled_from(["stop", "length"]),
                }
            ),
            min_size=1,
            max_size=1,
        ),
    }
)


def encode(chunks: list[dict[str, Any]], newline: str) -> bytes:
    text = "".join(f"data: {json.dumps(c, ensure_ascii=False)}{newline}{newline}" for c in chunks)
    return (text + f"data: [DONE]{newline}{newline}").encode()


def decode(pieces: list[bytes]) -> list[ChatChunk | str]:
    decoder = SSEDecoder()
    out: list[ChatChunk | str] = []
    for piece in pieces:
        for event in decoder.feed(piece):
            out.append(event.data if event.data == "[DONE]" else parse_chunk(event.data))
    return out


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, start = [], 0
    for size in sizes:
        pieces.append(data[start : start + size])
        start += size
    pieces.append(data[start:])
    return pieces


@settings(max_examples=200)
@given(
    st.lists(_chunk, min_size=1, max_size=8),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(min_value=1, max_value=17), max_size=60),
)
def test_same_chunks_for_every_fragmentation(
    chunks: list[dict[str, Any]], newline: str, sizes: list[int]
) -> None:
    data = encode(chunks, newline)
    whole = decode([data])
    assert decode(cut(data, sizes)) == whole
    texts = [c.text for c in whole if isinstance(c, ChatChunk)]
    assert texts == [c["choices"][0]["delta"]["content"] for c in chunks]
    assert whole[-1] == "[DONE]"


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=9), max_size=40))
def test_random_bytes_raise_only_tir_errors(data: bytes, sizes: list[int]) -> None:
    def outcome(pieces: list[bytes]) -> object:
        try:
            return decode(pieces)
        except TIRError as error:  # anything else escapes and fails the test
            assert str(error), "an error that says nothing"
            return type(error), str(error)

    whole = b"data: " + data
    # However the bytes were cut, the same events or the same error.
    assert outcome(cut(whole, sizes)) == outcome([whole])
