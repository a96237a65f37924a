"""Embeddings in the core: the pure wire format, and EmbeddingsClient against the emulator."""

from __future__ import annotations

import asyncio
import base64
import pickle
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, embed_tokens, embed_vector
from tir_transport import (
    BadRequestError,
    ConfigurationError,
    ContextLengthExceededError,
    EmbeddingsClient,
    InputError,
    InvalidResponseError,
    RateLimitError,
    TIRConfig,
    track_usage,
)
from tir_transport._embeddings.wire import (
    build_embeddings_payload,
    decode_base64,
    is_encoding_rejection,
    parse_embeddings,
)
from tir_transport._errors import error_from_response
from tir_transport._transport import in_flight

MODEL = "e5_small"

# -- pure -------------------------------------------------------------------------------------


def b64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def test_payload_sends_only_what_is_set() -> None:
    assert build_embeddings_payload(["a"], MODEL) == {
        "model": MODEL,
        "input": ["a"],
        "encoding_format": "base64",
    }
    full = build_embeddings_payload(
        ["a", "b"],
        MODEL,
        encoding_format="float",
        dimensions=8,
        truncate_prompt_tokens=-1,
        extra_body={"input_type": "passage"},
    )
    assert full["dimensions"] == 8 and full["truncate_prompt_tokens"] == -1
    assert (full["encoding_format"], full["input_type"]) == ("float", "passage")


def test_base64_decodes_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0e-8, 1e30]
    assert decode_base64(b64(vector)) == pytest.approx(vector, rel=1e-6)


def test_parse_puts_each_vector_in_its_place() -> None:
    data = {
        "data": [
            {"index": 2, "embedding": [3.0, 3.0]},
            {"index": 0, "embedding": b64([1.0, 1.0])},
            {"index": 1, "embedding": [2.0, 2.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    reply = parse_embeddings(data, 3)
    assert reply.vectors == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert reply.model == "m"
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.total_tokens) == (
        7,
        7,
    )
    assert parse_embeddings({"data": []}, 0).usage is None


@pytest.mark.parametrize(
    ("items", "complaint"),
    [
        ([{"index": 0, "embedding": [1.0]}], "1 vectors for 2 texts"),
        ([{"index": 0, "embedding": [1.0]}, {"embedding": [1.0]}], "no valid index"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}], "two vectors"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [1.0]}], "no valid index"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": {}}], "neither"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "%%"}], "cannot be read"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2]}], "lengths"),
        ([{"index": 0, "embedding": [1.0]}, "junk"], "cannot be read"),
        # Float vectors are checked as base64 ones are: numbers, not empty, a real index.
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [None]}], "cannot be"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": ["0.5"]}], "cannot be"),
        ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [[2.0]]}], "cannot be"),
        ([{"index": 0, "embedding": []}, {"index": 1, "embedding": []}], "vectors are empty"),
        ([{"index": 0, "embedding": [1.0]}, {"index": True, "embedding": [2.0]}], "no valid"),
    ],
)
def test_parse_refuses_a_reply_that_does_not_fit(items: list[Any], complaint: str) -> None:
    with pytest.raises(InvalidResponseError, match=complaint):
        parse_embeddings({"data": items}, 2)


def test_batches_of_other_widths_are_refused(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    # Two batches answered by two models (a gateway's pool): no vector may be compared with
    # another, so none is returned.
    def floats(width: int) -> dict[str, Any]:
        return {"data": [{"index": 0, "embedding": [0.5] * width}], "model": "e"}

    emulator.queue_embeddings(Reply(body=floats(3)), Reply(body=floats(4)))
    with pytest.raises(InvalidResponseError, match=r"different widths \[3, 4\]"):
        embed(make(batch_size=1, encoding_format="float"), ["one", "two"])


def test_parse_refuses_what_is_not_an_embeddings_reply() -> None:
    with pytest.raises(InvalidResponseError, match="no 'data' array"):
        parse_embeddings({"choices": []}, 1)


def test_encoding_rejection_is_recognised() -> None:
    rejected = error_from_response(400, b'{"message": "encoding_format: Input should be float"}')
    other = error_from_response(400, b'{"message": "input too long"}')
    assert is_encoding_rejection(rejected) and not is_encoding_rejection(other)


# -- the client against the emulator -----------------------------------------------------------


class Embed:
    """Calls a client sync or async, so that one test body covers both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, client: EmbeddingsClient, texts: Sequence[Any]) -> list[list[float]]:
        if self.mode == "sync":
            return client.embed_documents(texts)
        return asyncio.run(client.aembed_documents(texts))

    def query(self, client: EmbeddingsClient, text: str) -> list[float]:
        if self.mode == "sync":
            return client.embed_query(text)
        return asyncio.run(client.aembed_query(text))


@pytest.fixture(params=["sync", "async"], ids=["sync", "async"])
def embed(request: pytest.FixtureRequest) -> Embed:
    return Embed(request.param)


@pytest.fixture
def make(emulator: Emulator) -> Callable[..., EmbeddingsClient]:
    def build(**options: Any) -> EmbeddingsClient:
        defaults: dict[str, Any] = {
            "api_key": TEST_KEY,
            "project_id": "1234",
            "base_url": emulator.base_url,
            "model": MODEL,
            "timeout": 5.0,
        }
        return EmbeddingsClient.from_env(**{**defaults, **options})

    return build


TEXTS = [f"text number {i} about topic {i % 3}" for i in range(23)]


@pytest.mark.timing
def test_vectors_in_input_order_across_batches(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    # The first three answer only together (a peak of 3 is certain); the rest take a while,
    # so that more in flight than asked would show.
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=3)] * 3)
    emulator.embed_delay = 0.02
    vectors = embed(make(batch_size=4, max_concurrency=3), TEXTS)
    assert vectors == [embed_vector(t) for t in TEXTS]
    # Batches of 4 (in flight together, so they may arrive in any order).
    assert sorted(len(r.json["input"]) for r in emulator.requests) == [3, 4, 4, 4, 4, 4]
    # Three requests were in flight at once, never more than asked.
    assert emulator.max_in_flight == 3


def test_one_at_a_time_when_asked(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.embed_delay = 0.01
    embed(make(batch_size=4, max_concurrency=1), TEXTS)
    assert emulator.max_in_flight == 1


def test_wire_format_and_urls(emulator: Emulator, embed: Embed) -> None:
    base = {"api_key": TEST_KEY, "model": MODEL, "host": emulator.url}
    embed(EmbeddingsClient.from_env(project_id=4242, **base), ["a"])
    embed(EmbeddingsClient.from_env(project_id="p-42", endpoint_id=9, **base), ["a"])
    genai, endpoint = emulator.requests
    assert genai.path == f"/project/p-4242/genai/{MODEL}/v1/embeddings"
    assert genai.query == {"project_id": ["4242"]}
    assert endpoint.path == "/project/p-42/endpoint/is-9/v1/embeddings"
    assert genai.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert genai.json == {"model": MODEL, "input": ["a"], "encoding_format": "base64"}


def test_dimensions_and_truncation_reach_the_wire(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    vectors = embed(make(dimensions=8, truncate_prompt_tokens=-1), ["a b"])
    assert len(vectors[0]) == 8
    body = emulator.requests[0].json
    assert (body["dimensions"], body["truncate_prompt_tokens"]) == (8, -1)


def test_base64_ignored_is_read_as_floats(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.embed_ignore_base64 = True
    assert embed(make(), ["red apple"]) == [embed_vector("red apple")]


def test_base64_rejected_falls_back_to_floats_once(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.embed_reject_base64 = True
    client = make()
    assert embed(client, ["red apple"]) == [embed_vector("red apple")]
    assert embed(client, ["green pear"]) == [embed_vector("green pear")]
    formats = [r.json["encoding_format"] for r in emulator.requests]
    assert formats == ["base64", "float", "float"]


def test_base64_rejected_falls_back_for_every_batch_in_flight(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    # Eight batches sent as base64 at once: the first rejection switches the client to
    # floats, and every other batch, rejected for the base64 it was sent with, is re-sent too.
    emulator.embed_reject_base64 = True
    texts = [f"text {i}" for i in range(8)]
    assert embed(make(batch_size=1, max_concurrency=8), texts) == [embed_vector(t) for t in texts]
    floats = [r.json["input"][0] for r in emulator.requests if r.json["encoding_format"] == "float"]
    assert sorted(floats) == texts


def test_float_when_asked(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    assert embed(make(encoding_format="float"), ["x"]) == [embed_vector("x")]
    assert emulator.requests[0].json["encoding_format"] == "float"


@pytest.mark.parametrize("fault", ["short", "no-index"])
def test_a_reply_that_does_not_fit_is_an_error(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed, fault: str
) -> None:
    emulator.queue_embeddings(Reply(short_by=1) if fault == "short" else Reply(drop_index=True))
    with pytest.raises(InvalidResponseError) as info:
        embed(make(), ["a", "b", "c"])
    assert info.value.request_id


def test_too_long_input_is_named_by_its_index(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.embed_max_tokens = 10
    texts = [f"short {i}" for i in range(20)]
    texts[13] = "word " * 30
    with pytest.raises(ContextLengthExceededError) as info:
        embed(make(batch_size=8, max_concurrency=1), texts)
    error = info.value
    assert error.input_index == 13
    assert str(error).startswith("text 13 (of the 20 given")
    assert "maximum context length is 10 tokens" in str(error)
    assert "truncate_prompt_tokens" in str(error)
    assert pickle.loads(pickle.dumps(error)).input_index == 13


@pytest.mark.parametrize("way", ["raise", "each"])
def test_the_halving_search_sends_no_batch_it_can_infer(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], way: str
) -> None:
    # One too-long text last in a batch of 8: the batch fails; each first half passes, so
    # each second half is known to fail without being sent. 8 -> [0:4] ok -> [4:6] ok ->
    # [6] ok -> [7] inferred: 4 requests (sending the second halves too would be 7).
    emulator.embed_max_tokens = 10
    texts = [f"short {i}" for i in range(7)] + ["word " * 30]
    client = make(batch_size=8)
    if way == "raise":
        with pytest.raises(ContextLengthExceededError) as info:
            client.embed(texts)
        assert info.value.input_index == 7
    else:
        results = asyncio.run(client.aembed_each(texts))
        assert [isinstance(r, ContextLengthExceededError) for r in results] == [False] * 7 + [True]
        assert results[:7] == [embed_vector(t) for t in texts[:7]]
    sent = [len(r.json["input"]) for r in emulator.requests]
    assert sent == [8, 4, 2, 1]


def test_truncation_lets_the_server_cut(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.embed_max_tokens = 10
    assert len(embed(make(truncate_prompt_tokens=10), ["word " * 30])) == 1


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ("", "text 1 is empty"),
        ("   ", "text 1 is empty"),
        (None, "text 1 is a NoneType"),
        # A lone surrogate (a PDF extractor's half pair) was a UnicodeEncodeError from deep
        # inside the request, naming no text.
        ("caf\udce9 au lait", "text 1 is not valid text: it holds a lone surrogate"),
    ],
)
def test_bad_inputs_fail_before_anything_is_sent(
    emulator: Emulator,
    make: Callable[..., EmbeddingsClient],
    embed: Embed,
    bad: Any,
    complaint: str,
) -> None:
    with pytest.raises(InputError, match=complaint):
        embed(make(), ["fine", bad, "fine"])
    assert isinstance(InputError("x"), ValueError)
    assert emulator.requests == []


def test_a_string_is_not_a_list_of_texts(make: Callable[..., EmbeddingsClient]) -> None:
    with pytest.raises(TypeError, match="embed_query"):
        make().embed_documents("one text")


def test_no_texts_no_request(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    assert embed(make(), []) == []
    assert emulator.requests == []


def test_prefixes(emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed) -> None:
    client = make(query_prefix="query: ", document_prefix="passage: ")
    embed(client, ["doc"])
    embed.query(client, "what")
    assert [r.json["input"] for r in emulator.requests] == [["passage: doc"], ["query: what"]]


def test_retries_then_succeeds(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.queue_embeddings(
        Reply(status=429, headers={"retry-after": "0"}),
        Reply(status=503, headers={"retry-after": "0"}),
    )
    assert embed(make(), ["a"]) == [embed_vector("a")]
    assert len(emulator.requests) == 3


def test_retries_run_out(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.queue_embeddings(*[Reply(status=429, headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError):
        embed(make(max_retries=1), ["a"])
    assert len(emulator.requests) == 2


def test_failure_in_one_batch_fails_the_call(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.queue_embeddings(Reply(status=400, message="bad batch"))
    with pytest.raises(BadRequestError, match="bad batch") as caught:
        embed(make(batch_size=2, max_concurrency=2, max_retries=0), TEXTS)
    assert caught.value.status_code == 400


def test_usage_counts_as_input_tokens(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    with track_usage() as usage:
        embed(make(batch_size=5, max_concurrency=4), TEXTS)
    assert usage.requests == 5
    assert usage.input_tokens == usage.total_tokens == sum(embed_tokens(t) for t in TEXTS)
    assert usage.output_tokens == 0
    assert list(usage.by_model) == [MODEL]


def test_usage_unknown_is_counted_apart(
    emulator: Emulator, make: Callable[..., EmbeddingsClient], embed: Embed
) -> None:
    emulator.queue_embeddings(Reply(no_usage=True))
    with track_usage() as usage:
        embed(make(), ["a"])
    assert (usage.requests_without_usage, usage.total_tokens) == (1, 0)


def test_missing_model_is_named_with_everything_else(
    emulator: Emulator, embed: Embed, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as info:
        embed(EmbeddingsClient.from_env(), ["a"])
    for name in ("TIR_EMBEDDING_MODEL", "TIR_API_KEY", "TIR_PROJECT_ID"):
        assert name in str(info.value)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "from_env")
    embed(EmbeddingsClient.from_env(api_key=TEST_KEY, base_url=emulator.base_url), ["a"])
    assert emulator.requests[0].json["model"] == "from_env"


def test_bad_settings() -> None:
    config = TIRConfig(model=MODEL)
    for options in ({"batch_size": 0}, {"max_concurrency": 0}, {"encoding_format": "int8"}):
        with pytest.raises(ValueError):
            EmbeddingsClient(config, **options)


def test_key_hidden_and_pickle(make: Callable[..., EmbeddingsClient], embed: Embed) -> None:
    client = make(batch_size=3)
    assert TEST_KEY not in repr(client)
    copy = pickle.loads(pickle.dumps(client))
    assert TEST_KEY not in repr(copy) and copy.batch_size == 3
    assert embed(copy, ["a"]) == [embed_vector("a")]


def test_sync_client_is_safe_from_many_threads(
    emulator: Emulator, make: Callable[..., EmbeddingsClient]
) -> None:
    client = make(batch_size=2, max_concurrency=2)
    results: list[list[list[float]]] = []

    def work() -> None:
        results.append(client.embed_documents(TEXTS[:7]))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[embed_vector(t) for t in TEXTS[:7]]] * 6


def test_in_flight_stops_sending_at_the_first_failure_not_at_the_slowest_job() -> None:
    # Job 0 is slow, job 1 fails at once: the jobs queued behind them are not sent while job
    # 0 runs (reading results in job order would wait for job 0 and start all 40).
    started: list[int] = []
    release = threading.Event()

    def send(job: int) -> int:
        started.append(job)
        if job == 0:
            release.wait(SLOW_JOB_SECONDS)
        elif job == 1:
            raise RateLimitError("job 1 failed")
        else:
            time.sleep(QUICK_JOB_SECONDS)
        return job

    try:
        with pytest.raises(RateLimitError, match="job 1"):
            in_flight(send, list(range(40)), 4, "test")
    finally:
        release.set()
    # Three workers keep working until the failure is seen: a few quick jobs, not 38.
    assert len(started) < 20, started


# Generous on a busy machine: the failure is seen within milliseconds; job 0 lasts far longer.
SLOW_JOB_SECONDS = 3.0
QUICK_JOB_SECONDS = 0.05
