from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tir_transport._sse import ServerSentEvent, SSEDecoder

SEED = (
    Path(__file__).resolve().parent.parent / "support" / "fixtures" / "seed_stream.txt"
).read_bytes()


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_seed_stream_events() -> None:
    events = decode([SEED])
    assert len(events) == 12
    assert events[-1].data == "[DONE]"
    assert all(e.event == "message" for e in events)
    assert events[1].data.startswith('{"id":"chat-b3b5ae1d266c428f894f05e33a39ea5b"')


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_fragmentation_gives_the_same_events(newline: bytes) -> None:
    data = SEED.replace(b"\n", newline)
    whole = decode([data])
    assert [e.data for e in whole] == [e.data for e in decode([SEED])]
    # Sizes 1..n: every way of cutting the stream into equal reads.
    for size in range(1, len(data) + 1):
        assert decode(split_every(data, size)) == whole, size


def test_crlf_split_between_reads_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [ServerSentEvent("a\nb")]


def test_cr_alone_dispatches_without_waiting_for_more() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == [ServerSentEvent("x")]


def test_comments_are_ignored() -> None:
    data = b": keep-alive\n\ndata: 1\n:another comment\n\n"
    assert decode([data]) == [ServerSentEvent("1")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode([b"data: first\ndata:second\ndata\n\n"]) == [ServerSentEvent("first\nsecond\n")]


def test_event_id_and_retry_fields() -> None:
    (event,) = decode([b"event: error\nid: 7\nretry: 1500\ndata: {}\n\n"])
    assert event == ServerSentEvent("{}", event="error", id="7", retry=1500)


def test_blank_event_without_data_is_not_dispatched() -> None:
    assert decode([b"event: ping\n\n\n\ndata: x\n\n"]) == [ServerSentEvent("x")]


def test_utf8_character_split_across_reads() -> None:
    data = 'data: {"content":"नमस्ते 👋 ü"}\n\n'.encode()
    for size in range(1, 8):
        (event,) = decode(split_every(data, size))
        assert event.data == '{"content":"नमस्ते 👋 ü"}'


def test_unicode_line_separators_inside_data_are_not_line_ends() -> None:
    # JSON may carry U+2028 raw; str.splitlines() would wrongly split there.
    payload = '{"content":"a\u2028b\x85c\x0cd"}'
    (event,) = decode([f"data: {payload}\n\n".encode()])
    assert event.data == payload


def test_event_without_final_blank_line_is_held_and_reported_pending() -> None:
    decoder = SSEDecoder()
    assert not decoder.pending
    assert decoder.feed(b"data: partial") == []
    assert decoder.pending
    # A line end completes the line, not the event: only the blank line dispatches it.
    assert decoder.feed(b"\n") == []
    assert decoder.pending
    assert decoder.feed(b"\n") == [ServerSentEvent("partial")]
    assert not decoder.pending


def test_invalid_utf8_is_replaced_not_raised() -> None:
    (event,) = decode([b"data: \xff\xfe\n\n"])
    assert event.data == "\ufffd\ufffd"


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=200))
def test_random_fragmentation_matches_whole(cuts: list[int]) -> None:
    data = SEED.replace(b"\n", b"\r\n")
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start : start + cut])
        start += cut
    pieces.append(data[start:])
    assert decode(pieces) == decode([data])


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_random_bytes_never_raise(data: bytes, size: int) -> None:
    decode(split_every(data, size))
