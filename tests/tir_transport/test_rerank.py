"""Rerank in the core: the pure wire format, and RerankClient against the emulator's route."""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import (
    Emulator,
    Reply,
    RerankReply,
    rerank_score,
    rerank_tokens,
)
from tir_transport import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextLengthExceededError,
    InputError,
    InvalidResponseError,
    RateLimitError,
    RerankClient,
    RerankResult,
    track_usage,
)
from tir_transport._rerank.wire import (
    build_rerank_payload,
    check_documents,
    merge_results,
    parse_rerank,
)

MODEL = "bge_reranker_v2_m3"
QUERY = "which river flows east into the bay"

# -- pure -------------------------------------------------------------------------------------


def test_payload_sends_only_what_is_set() -> None:
    assert build_rerank_payload("q", ["a", "b"], MODEL) == {
        "model": MODEL,
        "query": "q",
        "documents": ["a", "b"],
    }
    full = build_rerank_payload(
        "q", ("a",), MODEL, top_n=2, truncate_prompt_tokens=-1, extra_body={"x": 1}
    )
    assert (full["top_n"], full["truncate_prompt_tokens"], full["x"]) == (2, -1, 1)
    assert full["documents"] == ["a"]  # a list on the wire, whatever sequence was given


def reply(*results: tuple[Any, Any], text: bool = True, **extra: Any) -> dict[str, Any]:
    docs = ["doc a", "doc b", "doc c"]
    items: list[dict[str, Any]] = []
    for index, score in results:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if text and isinstance(index, int) and 0 <= index < 3:
            item["document"] = {"text": docs[index]}
        items.append(item)
    return {
        "id": "rerank-1",
        "model": "m",
        "usage": {"total_tokens": 42},
        "results": items,
        **extra,
    }


DOCS = ["doc a", "doc b", "doc c"]


def test_parse_reads_every_field() -> None:
    parsed = parse_rerank(reply((2, 0.9), (0, 0.5), (1, 0.1)), DOCS)
    assert parsed.results == [RerankResult(2, 0.9), RerankResult(0, 0.5), RerankResult(1, 0.1)]
    assert parsed.model == "m"
    # A cross-encoder's tokens are all read, none written: input tokens.
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (42, 0)
    assert parsed.usage.total_tokens == 42
    assert parse_rerank({"results": []}, []).usage is None


def test_parse_sorts_and_keeps_ties_in_input_order() -> None:
    # Worst first, a tie between 2 and 0, integer scores: read, sorted, tie by index.
    parsed = parse_rerank(reply((1, 0), (2, 1), (0, 1)), DOCS)
    assert [r.index for r in parsed.results] == [0, 2, 1]
    assert all(isinstance(r.relevance_score, float) for r in parsed.results)


def test_parse_takes_results_without_documents_and_more_than_top_n() -> None:
    # return_documents off; a server that ignored top_n: no wrong document either way.
    parsed = parse_rerank(reply((0, 0.2), (1, 0.3), (2, 0.1), text=False), DOCS, top_n=1)
    assert [r.index for r in parsed.results] == [1, 0, 2]


@pytest.mark.parametrize(
    ("data", "top_n", "complaint"),
    [
        ({"data": []}, None, "no 'results' array"),
        ("not a dict", None, "no 'results' array"),
        (reply((0, 0.5), (1, 0.4)), None, "2 results for 3 documents \\(all of them\\)"),
        (reply((0, 0.5)), 2, "1 results for 3 documents \\(top_n=2\\)"),
        (reply((0, 0.5), (0, 0.4), (1, 0.3)), None, "two results have index 0"),
        (reply((0, 0.5), (1, 0.4), (3, 0.3)), None, "no valid index \\(3\\)"),
        (reply((0, 0.5), (1, 0.4), (-1, 0.3)), None, "no valid index \\(-1\\)"),
        (reply((0, 0.5), (1, 0.4), (True, 0.3)), None, "no valid index \\(True\\)"),
        (reply((0, 0.5), (1, 0.4), ("2", 0.3)), None, "no valid index \\('2'\\)"),
        (reply((0, "high"), (1, 0.4), (2, 0.3)), None, "document 0 has no numeric"),
        (reply((0, None), (1, 0.4), (2, 0.3)), None, "document 0 has no numeric"),
        (reply((0, True), (1, 0.4), (2, 0.3)), None, "document 0 has no numeric"),
        (reply((0, math.nan), (1, 0.4), (2, 0.3)), None, "document 0 has no numeric"),
        ({"results": [{"index": 0, "relevance_score": 1}, "junk", 3]}, None, "not an object"),
        (reply((0, 0.5), (1, 0.4), (2, 0.3), (2, 0.1)), None, "4 results for 3 documents"),
    ],
)
def test_parse_refuses_a_reply_that_does_not_fit(
    data: Any, top_n: int | None, complaint: str
) -> None:
    with pytest.raises(InvalidResponseError, match=complaint):
        parse_rerank(data, DOCS, top_n=top_n)


def test_parse_refuses_a_result_that_quotes_another_document() -> None:
    data = reply((0, 0.5), (1, 0.4), (2, 0.3))
    data["results"][0]["document"] = {"text": "doc b"}
    with pytest.raises(InvalidResponseError, match="document 0 quotes another document"):
        parse_rerank(data, DOCS)
    data["results"][0]["document"] = "doc a"  # a plain string, as some servers send, is read
    assert parse_rerank(data, DOCS).results[0].index == 0


def test_a_bad_reply_is_quoted_without_the_key() -> None:
    data = {"echo": f"Authorization: Bearer {TEST_KEY}"}
    with pytest.raises(InvalidResponseError) as caught:
        parse_rerank(data, DOCS, secret=TEST_KEY)
    assert TEST_KEY not in str(caught.value) and "**********" in str(caught.value)


def test_merge_maps_indices_back_and_breaks_ties_by_input_order() -> None:
    first = [RerankResult(1, 0.9), RerankResult(0, 0.5)]
    second = [RerankResult(0, 0.9), RerankResult(1, 0.7)]  # documents 2 and 3
    merged = merge_results([(2, second), (0, first)], None)
    assert merged == [
        RerankResult(1, 0.9),
        RerankResult(2, 0.9),
        RerankResult(3, 0.7),
        RerankResult(0, 0.5),
    ]
    assert merge_results([(0, first), (2, second)], 2) == merged[:2]


@pytest.mark.parametrize(
    ("query", "documents", "complaint"),
    [
        ("q", ["fine", None, "fine"], "document 1 is a NoneType"),
        ("q", ["fine", "", "fine"], "document 1 is empty"),
        ("q", ["fine", "fine", " \n"], "document 2 is empty"),
        ("q", ["fine", "\ud83d half a pair"], "document 1 is not valid text"),
        ("q", "one text", "a list of texts"),
        (None, ["fine"], "the query is a NoneType"),
        ("  ", ["fine"], "the query is empty"),
    ],
)
def test_inputs_are_checked(query: Any, documents: Any, complaint: str) -> None:
    with pytest.raises(InputError, match=complaint):
        check_documents(query, documents)


# -- the client against the emulator -----------------------------------------------------------


class Rank:
    """Calls a client sync or async, so that one test body covers both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(
        self, client: RerankClient, query: Any, documents: Any, top_n: int | None = None
    ) -> list[RerankResult]:
        if self.mode == "sync":
            return client.rerank(query, documents, top_n=top_n)
        return asyncio.run(client.arerank(query, documents, top_n=top_n))


@pytest.fixture(params=["sync", "async"], ids=["sync", "async"])
def rank(request: pytest.FixtureRequest) -> Rank:
    return Rank(request.param)


@pytest.fixture
def make(emulator: Emulator) -> Callable[..., RerankClient]:
    def build(**options: Any) -> RerankClient:
        defaults: dict[str, Any] = {
            "api_key": TEST_KEY,
            "project_id": "1234",
            "base_url": emulator.base_url,
            "model": MODEL,
            "timeout": 5.0,
        }
        return RerankClient.from_env(**{**defaults, **options})

    return build


def expected(query: str, documents: Sequence[str], top_n: int | None = None) -> list[int]:
    """The order a correct client gives: by score, ties in input order."""
    order = sorted(range(len(documents)), key=lambda i: (-rerank_score(query, documents[i]), i))
    return order if top_n is None else order[:top_n]


RIVERS = [
    "The Narmada flows west into the Arabian Sea.",
    "The Ganga flows east into the Bay of Bengal.",
    "Paris is the capital of France.",
    "The Godavari river flows east.",
]


def test_wire_format_and_urls(emulator: Emulator, rank: Rank) -> None:
    base = {"api_key": TEST_KEY, "model": MODEL, "host": emulator.url}
    rank(RerankClient.from_env(project_id=4242, **base), QUERY, RIVERS, top_n=2)
    rank(RerankClient.from_env(project_id="p-42", endpoint_id=9, **base), QUERY, ["a b"])
    genai, endpoint = emulator.requests
    assert (genai.method, genai.path) == ("POST", f"/project/p-4242/genai/{MODEL}/v1/rerank")
    assert genai.query == {"project_id": ["4242"]}
    assert endpoint.path == "/project/p-42/endpoint/is-9/v1/rerank"
    assert genai.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert genai.headers["content-type"] == "application/json"
    assert genai.json == {"model": MODEL, "query": QUERY, "documents": RIVERS, "top_n": 2}


def test_base_url_form(emulator: Emulator, make: Callable[..., RerankClient], rank: Rank) -> None:
    rank(make(truncate_prompt_tokens=-1), QUERY, RIVERS)
    (request,) = emulator.requests
    assert request.path == "/v1/rerank" and request.query == {"project_id": ["1234"]}
    assert request.json["truncate_prompt_tokens"] == -1
    assert "top_n" not in request.json  # all results: no top_n on the wire


def test_one_batch_best_first(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    results = rank(make(), QUERY, RIVERS, top_n=2)
    assert [r.index for r in results] == expected(QUERY, RIVERS, 2) == [1, 3]
    assert [r.relevance_score for r in results] == [
        rerank_score(QUERY, RIVERS[1]),
        rerank_score(QUERY, RIVERS[3]),
    ]
    assert emulator.requests[0].json["top_n"] == 2  # the server cuts when it sees everything


DOCS_70 = [
    f"passage {i} about {'river flows east' if i % 7 == 3 else 'topic'} {i % 5}" for i in range(70)
]


@pytest.mark.timing
def test_batches_in_flight_merged_by_score(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.queue_rerank(*[RerankReply(hold_until_in_flight=3)] * 3)  # a certain peak of 3
    results = rank(make(batch_size=8, max_concurrency=3), QUERY, DOCS_70, top_n=5)
    assert [r.index for r in results] == expected(QUERY, DOCS_70, 5)
    assert [r.relevance_score for r in results] == [
        rerank_score(QUERY, DOCS_70[r.index]) for r in results
    ]
    requests = emulator.rerank_requests()
    assert sorted(len(r.json["documents"]) for r in requests) == [6] + [8] * 8
    # Each batch is asked for its best 5 only: the best 5 of all are among them.
    assert all(r.json["top_n"] == 5 for r in requests)
    sent = sorted(d for r in requests for d in r.json["documents"])
    assert sent == sorted(DOCS_70)  # every document once
    assert emulator.max_in_flight == 3


def test_ties_across_batches_keep_input_order(
    make: Callable[..., RerankClient], rank: Rank
) -> None:
    # Ten equal documents in four batches, then a better one last: input order among equals.
    documents = ["river flows"] * 10 + ["which river flows east"]
    results = rank(make(batch_size=3, max_concurrency=4), QUERY, documents)
    assert [r.index for r in results] == [10, *range(10)]


def test_one_at_a_time_when_asked(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.rerank_delay = 0.01
    results = rank(make(batch_size=4, max_concurrency=1), QUERY, DOCS_70)
    assert [r.index for r in results] == expected(QUERY, DOCS_70)
    assert emulator.max_in_flight == 1 and len(emulator.requests) == 18


def test_no_documents_no_request(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    assert rank(make(), QUERY, []) == []
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [("", "document 1 is empty"), ("   ", "document 1 is empty"), (7, "document 1 is a int")],
)
def test_bad_documents_fail_before_anything_is_sent(
    emulator: Emulator,
    make: Callable[..., RerankClient],
    rank: Rank,
    bad: Any,
    complaint: str,
) -> None:
    documents = ["fine"] * 40
    documents[1] = bad
    with pytest.raises(InputError, match=complaint):
        rank(make(batch_size=8), QUERY, documents)
    assert emulator.requests == []


def test_top_n_below_one_is_refused(make: Callable[..., RerankClient], rank: Rank) -> None:
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        rank(make(), QUERY, RIVERS, top_n=0)


@pytest.mark.parametrize(
    ("fault", "complaint"),
    [
        (RerankReply(duplicate_index=True), "two results have index"),
        (RerankReply(drop_result=True), "3 results for 4 documents"),
        (RerankReply(index_out_of_range=True), "no valid index \\(4\\)"),
        (RerankReply(bad_score=True, score="0.9"), "no numeric relevance_score"),
        (RerankReply(bad_score=True, score=None), "no numeric relevance_score"),
        (RerankReply(wrong_document=True), "quotes another document"),
        (Reply(body={"object": "list", "data": []}, status=200), "no 'results' array"),
        (Reply(body="<html>gateway</html>", status=200), "not JSON"),
    ],
    ids=[
        "duplicate",
        "missing",
        "out-of-range",
        "score-text",
        "score-null",
        "wrong-doc",
        "shape",
        "html",
    ],
)
def test_a_reply_that_does_not_fit_is_an_error(
    emulator: Emulator,
    make: Callable[..., RerankClient],
    rank: Rank,
    fault: Reply,
    complaint: str,
) -> None:
    emulator.queue_rerank(fault)
    with pytest.raises(InvalidResponseError, match=complaint) as caught:
        rank(make(), QUERY, RIVERS)
    assert caught.value.request_id  # the emulator's x-request-id, to quote to support
    assert len(emulator.requests) == 1  # a reply that does not fit is not retried


@pytest.mark.parametrize(
    ("fault", "top_n", "order"),
    [
        (RerankReply(unsorted=True), None, [1, 3, 0, 2]),
        (RerankReply(no_document=True), None, [1, 3, 0, 2]),
        (RerankReply(ignore_top_n=True), 2, [1, 3]),
    ],
    ids=["unsorted", "no-document", "ignored-top-n"],
)
def test_valid_variants_are_read(
    emulator: Emulator,
    make: Callable[..., RerankClient],
    rank: Rank,
    fault: RerankReply,
    top_n: int | None,
    order: list[int],
) -> None:
    emulator.queue_rerank(fault)
    assert [r.index for r in rank(make(), QUERY, RIVERS, top_n=top_n)] == order


def test_a_bad_reply_in_one_batch_fails_the_call(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.queue_rerank(RerankReply(), RerankReply(duplicate_index=True))
    with pytest.raises(InvalidResponseError, match="two results have index"):
        rank(make(batch_size=8, max_concurrency=1), QUERY, DOCS_70)


def test_retries_then_succeeds(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.queue_rerank(
        Reply(status=429, headers={"retry-after": "0"}),
        Reply(status=503, headers={"retry-after": "0"}),
    )
    assert [r.index for r in rank(make(), QUERY, RIVERS, top_n=1)] == [1]
    # The emulator notes a status after writing it: the client may read it first.
    emulator.wait_until(lambda: len(emulator.sent) == 3, "three responses sent")
    assert emulator.statuses() == [429, 503, 200]


def test_retries_run_out(emulator: Emulator, make: Callable[..., RerankClient], rank: Rank) -> None:
    emulator.queue_rerank(*[Reply(status=429, headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError):
        rank(make(max_retries=1), QUERY, RIVERS)
    assert len(emulator.requests) == 2


def test_a_wrong_key_says_what_to_do_and_never_shows_it(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.require_key = "the-right-key-0123456789"
    with pytest.raises(AuthenticationError) as caught:
        rank(make(max_retries=2), QUERY, RIVERS)
    text = str(caught.value) + repr(caught.value)
    assert "TIR_API_KEY" in text and "Invalid API key" in text and TEST_KEY not in text
    assert len(emulator.requests) == 1  # a 401 is not retried


def test_a_reply_that_echoes_the_key_is_quoted_without_it(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.queue_rerank(
        Reply(status=200, body=f"proxy echo: Authorization: Bearer {TEST_KEY}"),
        Reply(status=200, body={"headers": {"authorization": f"Bearer {TEST_KEY}"}}),
        Reply(status=400, message=f"bad request from Bearer {TEST_KEY}"),
    )
    for expected_error in (InvalidResponseError, InvalidResponseError, BadRequestError):
        with pytest.raises(expected_error) as caught:
            rank(make(), QUERY, RIVERS)
        assert TEST_KEY not in str(caught.value) + repr(caught.value.args)
        assert "**********" in str(caught.value)


def test_too_long_pair_names_its_batch(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.rerank_max_tokens = 30
    documents = [f"short {i}" for i in range(20)]
    documents[13] = "word " * 40
    with pytest.raises(ContextLengthExceededError) as caught:
        rank(make(batch_size=8, max_concurrency=1), QUERY, documents)
    message = str(caught.value)
    assert message.startswith("a document among 8..15 (of the 20 given")
    assert "truncate_prompt_tokens" in message and "maximum context length is 30" in message
    # Cut by the server when asked: no error.
    assert len(rank(make(batch_size=8, truncate_prompt_tokens=30), QUERY, documents)) == 20


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_too_long_pair_among_blank_documents_names_the_callers_indices(
    emulator: Emulator, make: Callable[..., RerankClient], mode: str
) -> None:
    # The adapters' blank="last" sends the documents that are not blank: the batch was named
    # in the positions of those sent ("among 1..1 of the 2 given"), not of those given.
    emulator.rerank_max_tokens = 30
    documents = ["", " ", "short", "word " * 40]
    client = make(batch_size=1)
    with pytest.raises(ContextLengthExceededError) as caught:
        if mode == "sync":
            client.rerank(QUERY, documents, blank="last")
        else:
            asyncio.run(client.arerank(QUERY, documents, blank="last"))
    assert str(caught.value).startswith("a document among 3..3 (of the 4 given")
    assert isinstance(caught.value.__cause__, ContextLengthExceededError)


def test_usage_counts_as_input_tokens(make: Callable[..., RerankClient], rank: Rank) -> None:
    with track_usage() as usage:
        rank(make(batch_size=8, max_concurrency=4), QUERY, DOCS_70)
    assert usage.requests == 9
    assert usage.input_tokens == usage.total_tokens == sum(rerank_tokens(QUERY, d) for d in DOCS_70)
    assert usage.output_tokens == 0 and usage.requests_without_usage == 0
    assert usage.requests_by_model == {MODEL: 9}


def test_a_reply_without_usage_is_counted_apart(
    emulator: Emulator, make: Callable[..., RerankClient], rank: Rank
) -> None:
    emulator.queue_rerank(RerankReply(no_usage=True, model="served-name"))
    with track_usage() as usage:
        rank(make(), QUERY, RIVERS)
    assert (usage.requests, usage.requests_without_usage, usage.total_tokens) == (1, 1, 0)
    assert list(usage.by_model) == ["served-name"]  # the model the server says it ran


def test_missing_model_names_the_variable(
    emulator: Emulator, rank: Rank, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = RerankClient.from_env(api_key=TEST_KEY, base_url=emulator.base_url)
    with pytest.raises(ConfigurationError, match="TIR_RERANK_MODEL"):
        rank(client, QUERY, RIVERS)
    assert emulator.requests == []
    monkeypatch.setenv("TIR_RERANK_MODEL", "from-env")
    rank(RerankClient.from_env(api_key=TEST_KEY, base_url=emulator.base_url), QUERY, RIVERS)
    assert emulator.requests[0].json["model"] == "from-env"


def test_bad_numbers_are_refused() -> None:
    for bad in ({"batch_size": 0}, {"max_concurrency": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            RerankClient.from_env(model=MODEL, **bad)


def test_pickled_client_works_and_hides_the_key(
    make: Callable[..., RerankClient], rank: Rank
) -> None:
    client = make()
    assert TEST_KEY not in repr(client)
    copy = pickle.loads(pickle.dumps(client))
    assert [r.index for r in rank(copy, QUERY, RIVERS, top_n=1)] == [1]
