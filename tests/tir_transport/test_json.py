"""The JSON reader (orjson when installed) reads what `json` reads, and refuses what it refuses."""

from __future__ import annotations

import json

import pytest

from tir_transport._json import loads

SAMPLES = [
    b'{"a": 1, "b": [true, null, 1.5e-7], "c": "\\u00e9\\ud83d\\ude00"}',
    '{"text": "caf\u00e9"}',
    b'{"logprob": -Infinity, "x": NaN}',  # orjson refuses these; json reads them
    b'{"lone": "\\ud800"}',  # a lone surrogate
    b'{"k": 1, "k": 2}',  # the last one wins, as in json
]


@pytest.mark.parametrize("raw", SAMPLES)
def test_reads_what_json_reads(raw: bytes | str) -> None:
    got, expected = loads(raw), json.loads(raw)
    assert repr(got) == repr(expected)  # repr: NaN is not equal to itself


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"a": 1} trailing', b"\xff\xfe"])
def test_refuses_what_json_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        loads(raw)


def test_an_integer_over_64_bits_is_the_one_difference() -> None:
    # Why only stream events are read with it (tir_transport/_json.py): no chunk field holds one.
    assert loads(b'{"n": 123456789012345678901234567890}')["n"] == pytest.approx(1.2345678e29)
