"""Checks that hold for every adapter class alike: the same promise, six classes.

Chat, embeddings and rerank, each in LangChain and in LlamaIndex, over one connection model.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import pickle
import time
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import ValidationError

import langchain_tir
import llama_index_tir
from langchain_tir import ChatTIRLlama, TIREmbeddings
from langchain_tir import TIRRerank as LangChainRerank
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.conftest import TEST_KEY
from tests.support.emulator import DEFAULT_MODEL, Emulator, Reply
from tests.support.timing import assert_token_bucket
from tir_transport import (
    CONNECTION_FIELDS,
    AuthenticationError,
    InputError,
    TIRConnection,
    TIREmbeddingsConnection,
    TIRError,
    TIRRerankConnection,
)
from tir_transport.adapter import TIRChatConnection, UnsupportedContentError, argument_names

CLASSES: list[type[Any]] = [
    ChatTIRLlama,
    TIREmbeddings,
    TIRLlamaLLM,
    TIREmbedding,
    LangChainRerank,
    LlamaIndexRerank,
]
IDS = [
    "ChatTIRLlama",
    "TIREmbeddings",
    "TIRLlamaLLM",
    "TIREmbedding",
    "langchain_tir.TIRRerank",
    "llama_index_tir.TIRRerank",
]
CHATS = (ChatTIRLlama, TIRLlamaLLM)
EMBEDDINGS = (TIREmbeddings, TIREmbedding)
RERANKS = (LangChainRerank, LlamaIndexRerank)
# Each class's own connection model, and the numbers of its own that must be at least 1.
CONNECTION = {
    **dict.fromkeys(CHATS, TIRChatConnection),
    **dict.fromkeys(EMBEDDINGS, TIREmbeddingsConnection),
    **dict.fromkeys(RERANKS, TIRRerankConnection),
}
OWN_NUMBERS: dict[type[Any], tuple[str, ...]] = {
    ChatTIRLlama: (),
    TIRLlamaLLM: (),
    TIREmbeddings: ("batch_size", "max_concurrency"),
    TIREmbedding: ("embed_batch_size", "max_concurrency"),
    LangChainRerank: ("top_n", "batch_size", "max_concurrency"),
    LlamaIndexRerank: ("top_n", "batch_size", "max_concurrency"),
}
BATCHING = [c for c in CLASSES if OWN_NUMBERS[c]]
# The value each own number refuses: top_n=0 keeps none, as other rerankers do.
REFUSED = {"top_n": -1}
# Long and JWT-like: a validation error that quoted the arguments would show its tail.
KEY = "eyJhbGciOiJSUzI1NiJ9.payload.signature-0123456789abcdef"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize(
    "bad",
    [{"timeout": -1}, {"max_retries": "many"}, {"project_id": 1.5}, {"max_in_flight": 0}],
    ids=["timeout", "max_retries", "project_id", "max_in_flight"],
)
def test_a_validation_error_never_shows_the_key(cls: type[Any], bad: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)) as caught:
        cls(**bad, api_key=KEY)  # the key last: where a quoted dict would end
    text = str(caught.value) + repr(caught.value)
    assert KEY not in text and "signature" not in text


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_refused_argument_never_shows_the_key(cls: type[Any]) -> None:
    for bad in ({"temprature": 0}, {"n": 2}):
        with pytest.raises(ValidationError) as caught:
            cls(**bad, api_key=KEY)
        assert "signature" not in str(caught.value)


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_unknown_arguments_are_request_fields_or_errors(cls: type[Any]) -> None:
    extra = "model_kwargs" if cls is ChatTIRLlama else "additional_kwargs"
    with pytest.warns(UserWarning, match=f"'top_k' is not an argument of {cls.__name__}"):
        llm = cls(top_k=5)
    assert getattr(llm, extra) == {"top_k": 5}
    with pytest.raises(ValidationError, match="did you mean 'temperature'"):
        cls(temprature=0)


def _say_hi(llm: Any, stream: bool, **kwargs: Any) -> str:
    if isinstance(llm, ChatTIRLlama):
        if stream:
            return "".join(str(c.content) for c in llm.stream("hi", **kwargs))
        return str(llm.invoke("hi", **kwargs).content)
    message = [ChatMessage(role="user", content="hi")]
    if stream:
        return [r.message.content for r in llm.stream_chat(message, **kwargs)][-1] or ""
    return llm.chat(message, **kwargs).message.content or ""


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_stream_options_among_the_request_fields(cls: type[Any], emulator: Emulator) -> None:
    # How OpenAILike users ask vLLM for streamed usage. vLLM (and the emulator, as it) refuses
    # stream_options on a request that does not stream: sent there, every call failed.
    extra = "model_kwargs" if cls is ChatTIRLlama else "additional_kwargs"
    options = {"include_usage": True, "continuous_usage_stats": True}
    llm = cls(base_url=emulator.base_url, api_key=TEST_KEY, **{extra: {"stream_options": options}})
    assert _say_hi(llm, stream=False) == _say_hi(llm, stream=True) != ""
    plain, streamed = (r.json for r in emulator.requests)
    assert "stream_options" not in plain
    assert streamed["stream_options"] == options


@pytest.mark.parametrize("option", ["extra_headers", "extra_query", "timeout"])
@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_the_openai_clients_options_are_refused_before_sending(
    cls: type[Any], option: str, emulator: Emulator
) -> None:
    # ChatOpenAI and OpenAILike hand these to the openai client, which takes them out of the
    # body. Sent as body fields they would silently not apply (a header never sent). (Given
    # to the constructor, `timeout` is the model's own setting.)
    value = 5 if option == "timeout" else {"x": "1"}
    llm = cls(base_url=emulator.base_url, api_key=TEST_KEY)
    for stream in (False, True):
        with pytest.raises(ValueError, match=f"'{option}' is an option of the openai client"):
            _say_hi(llm, stream, **{option: value})
    if option != "timeout":
        extra = "model_kwargs" if cls is ChatTIRLlama else "additional_kwargs"
        llm = cls(base_url=emulator.base_url, api_key=TEST_KEY, **{extra: {option: value}})
        with pytest.raises(ValueError, match=f"'{option}' is an option of the openai client"):
            _say_hi(llm, False)
    assert emulator.requests == []


@pytest.mark.parametrize("cls", BATCHING, ids=[IDS[CLASSES.index(c)] for c in BATCHING])
def test_a_refused_own_number_never_shows_the_key(cls: type[Any]) -> None:
    for name in OWN_NUMBERS[cls]:
        with pytest.raises(ValidationError, match=name) as caught:
            cls(**{name: REFUSED.get(name, 0)}, api_key=KEY)
        assert "signature" not in str(caught.value) + repr(caught.value)


# -- one connection model: the same settings, read the same way, by every class -----------------


def model_for(cls: type[Any]) -> dict[str, str]:
    """The model an embeddings or rerank class needs (chat has a default)."""
    if cls in EMBEDDINGS:
        return {"model": "e5"}
    if cls in RERANKS:
        return {"model": "reranker"}
    return {}


def build(cls: type[Any], emulator: Emulator, **kwargs: Any) -> Any:
    return cls(api_key=TEST_KEY, base_url=emulator.base_url, **model_for(cls), **kwargs)


def call(instance: Any) -> Any:
    """One request through the class's own sync API; what it returns."""
    if isinstance(instance, ChatTIRLlama):
        return instance.invoke("hi")
    if isinstance(instance, TIRLlamaLLM):
        return instance.complete("hi")
    if isinstance(instance, TIREmbeddings):
        return instance.embed_documents(["hi"])
    if isinstance(instance, TIREmbedding):
        return instance.get_text_embedding_batch(["hi"])
    if isinstance(instance, LangChainRerank):
        return list(instance.compress_documents([Document(page_content="hi there")], "hi"))
    return instance.postprocess_nodes(
        [NodeWithScore(node=TextNode(text="hi there"))], query_str="hi"
    )


async def acall(instance: Any) -> Any:
    if isinstance(instance, ChatTIRLlama):
        return await instance.ainvoke("hi")
    if isinstance(instance, TIRLlamaLLM):
        return await instance.acomplete("hi")
    if isinstance(instance, TIREmbeddings):
        return await instance.aembed_documents(["hi"])
    if isinstance(instance, TIREmbedding):
        return await instance.aget_text_embedding_batch(["hi"])
    if isinstance(instance, LangChainRerank):
        return list(await instance.acompress_documents([Document(page_content="hi there")], "hi"))
    return await instance.apostprocess_nodes(
        [NodeWithScore(node=TextNode(text="hi there"))], query_str="hi"
    )


def queue(cls: type[Any], emulator: Emulator, *replies: Reply) -> None:
    """Script the next replies of the route the class calls."""
    if cls in CHATS:
        emulator.queue(*replies)
    elif cls in EMBEDDINGS:
        emulator.queue_embeddings(*replies)
    else:
        emulator.queue_rerank(*replies)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_class_has_the_whole_connection(cls: type[Any]) -> None:
    assert issubclass(cls, TIRConnection) and issubclass(cls, CONNECTION[cls])
    assert set(CONNECTION_FIELDS) <= set(cls.model_fields)
    # The fields of its kind too (a chat, embeddings or rerank model, sampling, batches...).
    assert set(CONNECTION[cls].model_fields) <= set(cls.model_fields)


def own_fields(cls: type[Any]) -> set[str]:
    """The fields `cls` declares itself (not those its bases declare)."""
    return set(inspect.get_annotations(cls)) & set(cls.model_fields)


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_the_chat_settings_both_chat_classes_share_are_declared_once(cls: type[Any]) -> None:
    # Declared in TIRChatConnection and never again by an adapter, so the two frameworks
    # cannot drift apart: the same type, default, bounds and accepted names in both. One
    # exception, on purpose: TIRLlamaLLM's temperature is 0.1 unless set, as OpenAILike's
    # (ChatOpenAI, like ChatTIRLlama, sends none); its type and bounds are the shared ones.
    shared = TIRChatConnection.model_fields
    assert {"model", "tool_mode", "temperature", "context_window"} <= set(shared)
    framework_default = {"temperature": 0.1} if cls is TIRLlamaLLM else {}
    assert set(shared) & own_fields(cls) == set(framework_default)
    for name, field in shared.items():
        own = cls.model_fields[name]
        assert (own.annotation, own.default, own.metadata) == (
            field.annotation,
            framework_default.get(name, field.default),
            field.metadata,
        ), name
    names = argument_names(cls)
    assert {k: v for k, v in names.items() if v in shared} == argument_names(TIRChatConnection)
    assert cls().model == "llama3_1_8b_instruct" and cls(model_name="m").model == "m"


def test_a_chat_setting_both_chat_classes_declare_takes_each_peers_names() -> None:
    # What each chat class still declares for itself under the same name is there because
    # its peer (ChatOpenAI, OpenAILike) spells it differently; anything else both declare
    # belongs in TIRChatConnection.
    both = own_fields(ChatTIRLlama) & own_fields(TIRLlamaLLM)
    assert both == {"max_tokens", "stop"}
    langchain, llama_index = argument_names(ChatTIRLlama), argument_names(TIRLlamaLLM)
    for name in both:
        assert {k for k, v in langchain.items() if v == name} != {
            k for k, v in llama_index.items() if v == name
        }, name
    assert ChatTIRLlama(max_completion_tokens=5, stop_sequences="END").max_tokens == 5
    assert ChatTIRLlama(stop_sequences="END").stop == "END"


def test_both_chat_classes_refuse_media_with_one_error_class(emulator: Emulator) -> None:
    # One class, exported by both packages: one `except` catches either adapter's refusal.
    assert langchain_tir.UnsupportedContentError is UnsupportedContentError
    assert llama_index_tir.UnsupportedContentError is UnsupportedContentError
    # The caller's input, refused before anything is sent: an InputError, so a ValueError
    # (as it always was) and a TIRError (as every error of this library is).
    assert issubclass(UnsupportedContentError, InputError)
    assert issubclass(UnsupportedContentError, ValueError)
    assert issubclass(UnsupportedContentError, TIRError)
    langchain = ChatTIRLlama(base_url=emulator.base_url, api_key=TEST_KEY)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(UnsupportedContentError, match="text-only") as caught:
        langchain.invoke([HumanMessage([{"type": "text", "text": "what is this?"}, image])])
    assert type(caught.value) is UnsupportedContentError
    llama_index = TIRLlamaLLM(base_url=emulator.base_url, api_key=TEST_KEY)
    message = ChatMessage(
        role="user",
        blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://example.com/a.png")],
    )
    with pytest.raises(UnsupportedContentError, match="text-only") as caught:
        llama_index.chat([message])
    assert type(caught.value) is UnsupportedContentError
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), str(copy)) == (UnsupportedContentError, str(caught.value))
    assert emulator.requests == []


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_environment_is_read_the_same_way(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "from-the-sdk-variable-123")
    monkeypatch.setenv("TIR_PROJECT_ID", "4242")
    monkeypatch.setenv("TIR_HOST", "https://tir.example.com")
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "e5")
    monkeypatch.setenv("TIR_RERANK_MODEL", "bge_reranker")
    instance = cls(request_timeout=7)
    assert instance.api_key.get_secret_value() == "from-the-sdk-variable-123"
    assert (instance.project_id, instance.host, instance.timeout) == (
        "4242",
        "https://tir.example.com",
        7,
    )
    # Each kind reads its own model variable (chat has a default and reads none).
    wanted = "e5" if cls in EMBEDDINGS else "bge_reranker" if cls in RERANKS else DEFAULT_MODEL
    assert instance.model == wanted
    assert cls(project_id=7).project_id == "7"  # given wins, ints welcome
    # A host given is a choice of server: TIR_BASE_URL (a base URL overrides the host) is
    # then not read, or the host given would silently not be used.
    monkeypatch.setenv("TIR_BASE_URL", "http://127.0.0.1:9/v1")
    assert cls().base_url == "http://127.0.0.1:9/v1"
    chosen = cls(host="https://infer.example.net")
    assert (chosen.host, chosen.base_url) == ("https://infer.example.net", None)
    assert cls(host="https://infer.example.net", base_url="http://a.example/v1").base_url


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_none_is_the_default_as_the_peers_take_it(cls: type[Any]) -> None:
    # LangChain's own ChatOpenAI snippet: `ChatOpenAI(model=..., temperature=0,
    # max_tokens=None, timeout=None, max_retries=2)`; an httpx.Timeout as the openai client
    # takes one (its read timeout is what ours is).
    made = cls(timeout=None, max_retries=None, **model_for(cls))
    assert (made.timeout, made.max_retries) == (60.0, 2)
    assert cls(request_timeout=httpx.Timeout(10, connect=5), **model_for(cls)).timeout == 10
    with pytest.raises(ValidationError, match="without a read timeout"):
        cls(timeout=httpx.Timeout(None), **model_for(cls))
    if cls is ChatTIRLlama:
        llm = ChatTIRLlama(
            model="llama3_1_8b_instruct",
            temperature=0,
            max_tokens=None,
            timeout=None,
            max_retries=2,
            stream_usage=None,
        )
        assert (llm.max_tokens, llm.timeout, llm.stream_usage) == (None, 60.0, True)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_settings_fail_alike(cls: type[Any]) -> None:
    own = [{name: REFUSED.get(name, 0)} for name in OWN_NUMBERS[cls]]
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"requests_per_minute": 0}, *own):
        with pytest.raises(ValidationError):
            cls(**bad)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_default_headers_go_with_every_request(cls: type[Any], emulator: Emulator) -> None:
    instance = build(cls, emulator, default_headers={"X-Team": "search", "X-Trace": "t-1"})
    call(instance)
    asyncio.run(acall(instance))
    assert len(emulator.requests) == 2
    for request in emulator.requests:
        assert request.headers["x-team"] == "search" and request.headers["x-trace"] == "t-1"
        assert request.headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_your_own_http_clients_are_used_and_never_closed(
    cls: type[Any], emulator: Emulator
) -> None:
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append("sync")

    async def ahook(request: httpx.Request) -> None:
        seen.append("async")

    sync_client = httpx.Client(event_hooks={"request": [hook]})

    async def main() -> None:
        async_client = httpx.AsyncClient(event_hooks={"request": [ahook]})
        instance = build(cls, emulator, http_client=sync_client, http_async_client=async_client)
        call(instance)
        await acall(instance)
        del instance
        gc.collect()
        assert not async_client.is_closed
        await async_client.aclose()

    asyncio.run(main())
    assert seen == ["sync", "async"]
    assert not sync_client.is_closed  # ours to close, not the library's
    sync_client.close()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_pickling_with_your_own_client_says_why_it_cannot(
    cls: type[Any], emulator: Emulator
) -> None:
    with httpx.Client() as client:
        instance = build(cls, emulator, http_client=client)
        with pytest.raises(TypeError, match="own http_client"):
            pickle.dumps(instance)
    plain = pickle.loads(pickle.dumps(build(cls, emulator)))
    assert call(plain)  # an answer, a vector, a passage kept
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_short_key_leaves_error_text_alone(cls: type[Any], emulator: Emulator) -> None:
    # A key "k" scrubbed everywhere would turn the server's "Invalid API key" into
    # "Invalid API **********ey" (and "tokens" into "to**********ens").
    emulator.require_key = "the-real-key-0123456789"
    instance = cls(api_key="k", base_url=emulator.base_url, max_retries=0, **model_for(cls))
    with pytest.raises(AuthenticationError, match="Invalid API key") as caught:
        call(instance)
    assert "*" not in str(caught.value)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_long_key_never_shows_in_a_failure(cls: type[Any], emulator: Emulator) -> None:
    emulator.require_key = "the-real-key-0123456789"
    instance = cls(api_key=KEY, base_url=emulator.base_url, max_retries=0, **model_for(cls))
    for text in (repr(instance), str(instance.model_dump()), instance.model_dump_json()):
        assert KEY not in text
    with pytest.raises(AuthenticationError) as caught:
        call(instance)
    assert KEY not in str(caught.value) + repr(caught.value.args)
    assert len(emulator.requests) == 1 and emulator.statuses() == [401]


# -- limits: the instance's, whichever way its requests go -----------------------------------------


@pytest.mark.timing
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_max_in_flight_holds_across_calls(cls: type[Any], emulator: Emulator) -> None:
    # The first two answer only together: a peak of 2 is certain; the rest take a while, so
    # that a limit not kept shows as more in flight.
    queue(cls, emulator, *[Reply(hold_until_in_flight=2)] * 2, *[Reply(delay=0.02)] * 6)
    instance = build(cls, emulator, max_in_flight=2)

    async def run() -> list[Any]:
        return await asyncio.gather(*(acall(instance) for _ in range(8)))

    assert all(asyncio.run(run()))
    assert len(emulator.requests) == 8 and emulator.max_in_flight == 2


@pytest.mark.timing
@pytest.mark.parametrize("cls", BATCHING, ids=[IDS[CLASSES.index(c)] for c in BATCHING])
def test_max_in_flight_holds_across_one_calls_batches(cls: type[Any], emulator: Emulator) -> None:
    # 8 batches of one and 4 allowed at once per call: max_in_flight (the instance's) keeps 2.
    queue(cls, emulator, *[Reply(hold_until_in_flight=2)] * 2, *[Reply(delay=0.02)] * 6)
    size = "embed_batch_size" if cls is TIREmbedding else "batch_size"
    instance = build(cls, emulator, max_in_flight=2, max_concurrency=4, **{size: 1})
    texts = [f"text {i}" for i in range(8)]
    if isinstance(instance, TIREmbeddings):
        assert len(instance.embed_documents(texts)) == 8
    elif isinstance(instance, TIREmbedding):
        assert len(instance.get_text_embedding_batch(texts)) == 8
    elif isinstance(instance, LangChainRerank):
        assert len(instance.rerank("text", texts)) == 8
    else:
        given = [NodeWithScore(node=TextNode(text=t)) for t in texts]
        instance.top_n = None
        assert len(instance.postprocess_nodes(given, query_str="text")) == 8
    assert len(emulator.requests) == 8 and emulator.max_in_flight == 2


@pytest.mark.timing
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_requests_per_minute_paces_every_class(
    cls: type[Any], emulator: Emulator, mode: str
) -> None:
    # 4 per second, bursts of 4: slower than any class sends unpaced, so that a pace that is
    # not kept shows (each class's own cost per request is well under 250 ms).
    instance = build(cls, emulator, requests_per_minute=240)
    started = time.monotonic()
    if mode == "sync":
        for _ in range(8):
            call(instance)
    else:

        async def run() -> None:
            await asyncio.gather(*(acall(instance) for _ in range(8)))

        asyncio.run(run())
    starts = emulator.starts(8)
    assert len(starts) == 8
    # The 4 of the burst at once, then one every 250 ms: the 8th no sooner than 1 s in.
    assert_token_bucket(starts, started, burst=4, per_second=4.0)
