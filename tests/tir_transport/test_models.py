"""`GET /models` read: the window an endpoint serves (the pure reader; doctor's tests run it
over the emulator and vLLM)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tir_transport import TIRConfig
from tir_transport._models.client import ModelsClient
from tir_transport._models.wire import served_window

MODEL = "llama3_1_8b_instruct"


@pytest.mark.parametrize(
    ("listing", "window"),
    [
        (
            {"data": [{"id": "other", "max_model_len": 1}, {"id": MODEL, "max_model_len": 8192}]},
            8192,
        ),
        ({"data": [{"id": "a gateway's own name", "max_model_len": 4096}]}, 4096),
        ({"data": [{"id": MODEL}]}, None),
        ({"data": [{"id": MODEL, "max_model_len": True}]}, None),
        ({"data": [{"id": MODEL, "max_model_len": 0}]}, None),
        ({"data": [{"id": MODEL, "max_model_len": "8192"}]}, None),
        ({"data": []}, None),
        ({"data": "none"}, None),
        (["not", "an", "object"], None),
    ],
)
def test_the_served_window_is_read_or_none(listing: Any, window: int | None) -> None:
    assert served_window(listing, MODEL) == window


def test_the_client_reads_it_over_the_transport(emulator: Emulator) -> None:
    config = TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL)
    with ModelsClient(config) as models:
        window = models.served_window()
    assert window is not None and window > 0
    (request,) = emulator.requests
    assert request.method == "GET" and request.path.endswith("/models")
