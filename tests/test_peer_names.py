"""The peers' argument names, and secrets that must never become request fields.

Users come with `ChatOpenAI` / `OpenAIEmbeddings` (LangChain) and `OpenAILike` /
`OpenAILikeEmbedding` (LlamaIndex) arguments. Each name that means something here is taken
with its meaning (checked on the wire, and beside the peer built with the same arguments);
each that means nothing is refused with what to do instead; none becomes a request field.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import warnings
from typing import Any

import httpx
import pytest
from langchain_core.load import Serializable, dumpd, dumps
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import BaseComponent
from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]
from llama_index.embeddings.openai_like import (  # type: ignore[import-untyped]
    OpenAILikeEmbedding,
)
from llama_index.llms.openai_like import OpenAILike  # type: ignore[import-untyped]
from pydantic import BaseModel, SecretStr, ValidationError

from langchain_tir import ChatTIRLlama, TIREmbeddings
from langchain_tir import TIRRerank as LangChainRerank
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.support.emulator import Emulator, Reply
from tests.test_every_adapter import (
    CHATS,
    CLASSES,
    IDS,
    acall,
    call,
    model_for,
)
from tir_transport import build_payload
from tir_transport._arguments import KNOWN_REQUEST_FIELDS
from tir_transport._peer_names import PEER_NAMES
from tir_transport._secrets import looks_secret

# Long and unlike any other text of a request: found wherever a copy of it went.
KEY = "sk-peer-7d1c0b9e4f2a68355a1b"
EXTRA: dict[type[Any], str] = {ChatTIRLlama: "model_kwargs", TIRLlamaLLM: "additional_kwargs"}


def ids(classes: tuple[type[Any], ...] | list[type[Any]]) -> list[str]:
    return [IDS[CLASSES.index(c)] for c in classes]


def body_fields(emulator: Emulator) -> list[dict[str, Any]]:
    return [r.json for r in emulator.requests]


def assert_key_nowhere_but_the_header(emulator: Emulator) -> None:
    assert emulator.requests
    for request in emulator.requests:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in request.body.decode()
        assert KEY not in json.dumps(request.query)


# -- the key and the URL under the peers' names ------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize(
    "names",
    [("openai_api_key", "openai_api_base"), ("api_key", "api_base")],
    ids=["ChatOpenAI-names", "OpenAILike-names"],
)
def test_the_peers_key_and_url_are_the_key_and_the_url(
    cls: type[Any], names: tuple[str, str], emulator: Emulator
) -> None:
    # TIR_API_KEY and TIR_BASE_URL are unset (conftest): only the peer's names say them.
    key_name, url_name = names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        instance = cls(**{key_name: KEY, url_name: emulator.base_url}, **model_for(cls))
    assert instance.api_key.get_secret_value() == KEY
    assert instance.base_url == emulator.base_url
    call(instance)
    asyncio.run(acall(instance))
    assert len(emulator.requests) == 2
    assert_key_nowhere_but_the_header(emulator)
    for body in body_fields(emulator):
        assert not {key_name, url_name} & set(body)
    if cls in EXTRA:
        assert getattr(instance, EXTRA[cls]) == {}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_key_under_a_peers_name_is_never_shown_or_serialised(cls: type[Any]) -> None:
    instance = cls(openai_api_key=KEY, **model_for(cls))
    shown = [repr(instance), str(instance), instance.model_dump_json(), str(instance.model_dump())]
    if isinstance(instance, Serializable):  # LangChain's serialisation
        shown += [dumps(instance), json.dumps(dumpd(instance))]
    if isinstance(instance, BaseComponent):  # LlamaIndex's
        shown += [instance.to_json(), json.dumps(instance.to_dict())]
    for text in shown:
        assert KEY not in text and KEY[-8:] not in text
    # Pickled (for a Ray actor, which needs the key) exactly as under its own name: the key
    # is in the secret field only, nowhere else.
    assert pickle.dumps(instance) == pickle.dumps(cls(api_key=KEY, **model_for(cls)))
    assert pickle.loads(pickle.dumps(instance)).api_key.get_secret_value() == KEY


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_name_given_twice_under_two_spellings_is_refused(cls: type[Any]) -> None:
    for given in (
        {"api_key": KEY, "openai_api_key": KEY + "-other"},
        {"base_url": "http://127.0.0.1:1/v1", "api_base": "http://127.0.0.1:2/v1"},
        {"openai_api_base": "http://127.0.0.1:1/v1", "api_base": "http://127.0.0.1:2/v1"},
    ):
        with pytest.raises(ValidationError, match="given twice") as caught:
            cls(**given, **model_for(cls))
        assert KEY not in str(caught.value)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_llama_index_s_async_http_client_is_the_async_client(
    cls: type[Any], emulator: Emulator
) -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async def main() -> None:
        async with httpx.AsyncClient(event_hooks={"request": [hook]}) as client:
            instance = cls(
                api_key=KEY, api_base=emulator.base_url, async_http_client=client, **model_for(cls)
            )
            assert instance.http_async_client is client
            await acall(instance)

    asyncio.run(main())
    assert len(seen) == 1


# -- side by side with the peer, built with the same arguments (no network) ---------------------


def test_chat_openai_s_arguments_mean_the_same(emulator: Emulator) -> None:
    given = {
        "openai_api_key": KEY,
        "openai_api_base": emulator.base_url,
        "model_name": "llama3_1_8b_instruct",
        "max_completion_tokens": 7,
        "request_timeout": 9,
        "stop_sequences": ["END"],
    }
    peer = ChatOpenAI(**given)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = ChatTIRLlama(**given)
    assert isinstance(peer.openai_api_key, SecretStr) and ours.api_key is not None
    assert ours.api_key.get_secret_value() == peer.openai_api_key.get_secret_value()
    assert ours.base_url == peer.openai_api_base
    assert (ours.model, ours.max_tokens, ours.timeout, ours.stop) == (
        peer.model_name,
        peer.max_tokens,
        peer.request_timeout,
        peer.stop,
    )
    assert ours.model_kwargs == {}
    ours.invoke("hi")
    (body,) = body_fields(emulator)
    assert body["model"] == "llama3_1_8b_instruct"
    assert body["max_tokens"] == 7 and body["stop"] == ["END"]
    assert not {"max_completion_tokens", "model_name", "openai_api_key", "openai_api_base"} & set(
        body
    )
    assert_key_nowhere_but_the_header(emulator)


def test_openai_like_s_arguments_mean_the_same(emulator: Emulator) -> None:
    given = {
        "api_base": emulator.base_url,
        "api_key": KEY,
        "model": "llama3_1_8b_instruct",
        "is_chat_model": True,
        "is_function_calling_model": True,
        "context_window": 4096,
        "max_tokens": 5,
    }
    peer = OpenAILike(**given)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = TIRLlamaLLM(**given)
    assert ours.additional_kwargs == {}
    assert ours.api_key is not None
    assert (ours.api_key.get_secret_value(), ours.base_url) == (peer.api_key, peer.api_base)
    for name in ("context_window", "num_output", "is_chat_model", "is_function_calling_model"):
        assert getattr(ours.metadata, name) == getattr(peer.metadata, name), name
    ours.complete("hi")
    asyncio.run(ours.achat([ChatMessage(role="user", content="hi")]))
    for body in body_fields(emulator):
        assert not {"api_base", "is_chat_model", "is_function_calling_model", "context_window"} & (
            set(body)
        )
        assert body["max_tokens"] == 5
    assert_key_nowhere_but_the_header(emulator)


def test_openai_embeddings_arguments_mean_the_same(emulator: Emulator) -> None:
    given = {
        "openai_api_key": KEY,
        "openai_api_base": emulator.base_url,
        "model": "e5",
        "chunk_size": 2,
        # What users set for any non-OpenAI server; what we do anyway (text is sent as text).
        "check_embedding_ctx_length": False,
        "tiktoken_enabled": False,
    }
    peer = OpenAIEmbeddings(**given)
    ours = TIREmbeddings(**given)
    assert (ours.base_url, ours.model, ours.batch_size) == (
        peer.openai_api_base,
        peer.model,
        peer.chunk_size,
    )
    assert len(ours.embed_documents(["a", "b", "c"])) == 3
    # Batches of chunk_size texts (in flight at once: in any order).
    assert sorted(b["input"] for b in body_fields(emulator)) == [["a", "b"], ["c"]]
    assert_key_nowhere_but_the_header(emulator)


def test_openai_like_embedding_s_arguments_mean_the_same(emulator: Emulator) -> None:
    given = {"model_name": "e5", "api_base": emulator.base_url, "api_key": KEY}
    peer = OpenAILikeEmbedding(**given, embed_batch_size=2)
    ours = TIREmbedding(**given, embed_batch_size=2, reuse_client=True)
    assert (ours.model, ours.model_name, ours.base_url) == ("e5", peer.model_name, peer.api_base)
    ours.get_text_embedding_batch(["a", "b", "c"])
    assert [b["model"] for b in body_fields(emulator)] == ["e5", "e5"]
    assert_key_nowhere_but_the_header(emulator)
    # LlamaIndex's own round trip gives both names: the same model, taken once.
    again = TIREmbedding.from_dict(ours.to_dict())
    assert (again.model, again.model_name) == ("e5", "e5")


def test_is_function_calling_model_false_is_what_llama_index_reads(emulator: Emulator) -> None:
    class City(BaseModel):
        name: str

    prompt = PromptTemplate("Name a city in {country}.")
    plain = TIRLlamaLLM(api_key=KEY, api_base=emulator.base_url, is_function_calling_model=False)
    assert plain.metadata.is_function_calling_model is False
    assert plain.additional_kwargs == {}
    # LlamaIndex then asks for the answer as text (LLMTextCompletionProgram): no tools sent.
    emulator.queue(Reply(text='{"name": "Pune"}'))
    assert plain.structured_predict(City, prompt, country="India") == City(name="Pune")
    (body,) = body_fields(emulator)
    assert "tools" not in body and "is_function_calling_model" not in body
    # The default (as OpenAILike's True): a forced tool call.
    emulator.reset()
    calling = TIRLlamaLLM(api_key=KEY, api_base=emulator.base_url)
    assert calling.metadata.is_function_calling_model is True
    emulator.queue(
        Reply(tool_calls=[{"id": "c1", "name": "City", "arguments": '{"name": "Pune"}'}])
    )
    assert calling.structured_predict(City, prompt, country="India") == City(name="Pune")
    (body,) = body_fields(emulator)
    assert [t["function"]["name"] for t in body["tools"]] == ["City"]
    # And it survives LlamaIndex's serialisation.
    assert TIRLlamaLLM.from_dict(plain.to_dict()).metadata.is_function_calling_model is False


# -- the peers' names that mean nothing here ---------------------------------------------------

REFUSED: list[tuple[type[Any], dict[str, Any], str]] = [
    (ChatTIRLlama, {"openai_proxy": "http://proxy:3128"}, r"http_client=httpx\.Client\(proxy"),
    (ChatTIRLlama, {"openai_proxy": "http://proxy:3128"}, "HTTPS_PROXY"),
    (TIREmbeddings, {"openai_proxy": "http://proxy:3128"}, "HTTPS_PROXY"),
    (ChatTIRLlama, {"openai_organization": "org-1"}, "project_id"),
    (ChatTIRLlama, {"organization": "org-1"}, "project_id"),
    (TIRLlamaLLM, {"api_version": "2024-02-01"}, "Azure"),
    (TIREmbedding, {"api_version": "2024-02-01"}, "Azure"),
    (TIREmbeddings, {"openai_api_version": "2024-02-01"}, "Azure"),
    (TIREmbeddings, {"deployment": "my-ada"}, "endpoint_id"),
    (TIRLlamaLLM, {"is_chat_model": False}, "chat completions only"),
    (ChatTIRLlama, {"is_function_calling_model": False}, "bind_tools"),
    (TIRLlamaLLM, {"reuse_client": False}, "pooled"),
    (TIRLlamaLLM, {"tokenizer": "gpt2"}, r"llm\.tokenizer"),
    (ChatTIRLlama, {"tiktoken_model_name": "gpt-4"}, "own tokenizer"),
    (TIREmbeddings, {"check_embedding_ctx_length": True}, "ContextLengthExceededError"),
    (TIREmbedding, {"chunk_size": 16}, "embed_batch_size"),
    (TIREmbeddings, {"model_kwargs": {"user": "me"}}, "dimensions"),
    (TIREmbedding, {"additional_kwargs": {"user": "me"}}, "dimensions"),
    (TIRLlamaLLM, {"model_kwargs": {"top_k": 5}}, "additional_kwargs"),
    (ChatTIRLlama, {"additional_kwargs": {"top_k": 5}}, "model_kwargs"),
    (ChatTIRLlama, {"use_responses_api": True}, "chat completions"),
    (ChatTIRLlama, {"reasoning_effort": "high"}, "model_kwargs"),
    (ChatTIRLlama, {"stream_chunk_timeout": 5}, "between two stream chunks"),
    (ChatTIRLlama, {"default_query": {"a": "b"}}, "project_id"),
    (TIRLlamaLLM, {"openai_client": object()}, "http_client"),
    (LangChainRerank, {"api_version": "1"}, "Azure"),
    (LlamaIndexRerank, {"openai_proxy": "http://proxy:3128"}, "HTTPS_PROXY"),
]


@pytest.mark.parametrize(
    ("cls", "given", "says"),
    REFUSED,
    ids=[f"{c.__name__}-{next(iter(g))}-{i}" for i, (c, g, _) in enumerate(REFUSED)],
)
def test_a_peers_name_that_means_nothing_here_is_refused(
    cls: type[Any], given: dict[str, Any], says: str
) -> None:
    (name,) = given
    with pytest.raises(ValidationError, match=says) as caught:
        cls(api_key=KEY, **given, **model_for(cls))
    text = str(caught.value)
    assert repr(name) in text and cls.__name__ in text
    assert KEY not in text


# A peer's setting given the value that asks for what happens here anyway (copied code keeps
# working), and with any other value refused.
FLAGS: list[tuple[type[Any], str, Any, Any]] = [
    (TIRLlamaLLM, "is_chat_model", True, False),
    (TIRLlamaLLM, "reuse_client", True, False),
    (TIRLlamaLLM, "should_use_structured_outputs", False, True),
    (ChatTIRLlama, "is_function_calling_model", True, False),
    (ChatTIRLlama, "openai_organization", None, "org-1"),
    (ChatTIRLlama, "include_response_headers", False, True),
    (TIREmbeddings, "check_embedding_ctx_length", False, True),
    (TIREmbeddings, "tiktoken_enabled", False, True),
    (TIREmbeddings, "show_progress_bar", True, 1),
    (TIREmbeddings, "skip_empty", False, True),
    (TIREmbeddings, "model_kwargs", {}, {"user": "me"}),
    (TIREmbedding, "reuse_client", True, False),
    (TIREmbedding, "api_version", None, "2024-02-01"),
    (TIREmbedding, "additional_kwargs", {}, {"user": "me"}),
    (TIREmbedding, "mode", "text_search", "similarity"),
]


@pytest.mark.parametrize(
    ("cls", "name", "anyway", "other"),
    FLAGS,
    ids=[f"{c.__name__}-{n}" for c, n, _, _ in FLAGS],
)
def test_a_peers_setting_is_accepted_for_what_happens_anyway_and_refused_otherwise(
    cls: type[Any], name: str, anyway: Any, other: Any, emulator: Emulator
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        instance = cls(api_key=KEY, base_url=emulator.base_url, **{name: anyway}, **model_for(cls))
    call(instance)
    (body,) = body_fields(emulator)
    assert name not in body
    if cls in EXTRA:
        assert getattr(instance, EXTRA[cls]) == {}
    with pytest.raises(ValidationError, match=f"does not take '{name}'"):
        cls(api_key=KEY, **{name: other}, **model_for(cls))


def _peer_names() -> set[str]:
    names: set[str] = set()
    for peer in (ChatOpenAI, OpenAIEmbeddings, OpenAILike, OpenAILikeEmbedding, OpenAIEmbedding):
        for field, info in peer.model_fields.items():
            names |= {
                field,
                *(a for a in (info.alias, info.validation_alias) if isinstance(a, str)),
            }
        names |= set(inspect.signature(peer.__init__).parameters)
    return names


def test_no_peers_name_becomes_a_request_field_unannounced() -> None:
    # Every argument of the four peers is ours (a field or an alias), refused / dropped by
    # the table, or a request field vLLM takes (moved with a warning that names it).
    from tir_transport._arguments import argument_names

    ours = set(argument_names(ChatTIRLlama)) | set(argument_names(TIRLlamaLLM))
    ours |= set(argument_names(TIREmbeddings)) | set(argument_names(TIREmbedding))
    handled = ours | set(PEER_NAMES) | KNOWN_REQUEST_FIELDS | {"self", "args", "kwargs", "data"}
    assert _peer_names() - handled == set()
    # And the table is read from the peers' own arguments: no invented names in it.
    assert set(PEER_NAMES) <= _peer_names()


# -- nothing that looks like a secret ever becomes a request field -----------------------------

SECRET_NAMES = [
    "hf_token",
    "access_token",
    "cohere_api_key",
    "apiKey",
    "x-api-key",
    "client_secret",
    "password",
    "Authorization",
    "bearer",
    "private_key",
]
NOT_SECRETS = [
    "max_tokens",
    "min_tokens",
    "max_completion_tokens",
    "stop_token_ids",
    "skip_special_tokens",
    "truncate_prompt_tokens",
    "top_k",
    "prompt_cache_key",
]


def test_what_looks_like_a_secret() -> None:
    assert [n for n in SECRET_NAMES if not looks_secret(n)] == []
    assert [n for n in NOT_SECRETS if looks_secret(n)] == []
    # No request field vLLM takes (nor its newer ones) is taken for a secret.
    vllm = {"add_special_tokens", "allowed_token_ids", "return_tokens_as_token_ids", "cache_salt"}
    assert [n for n in KNOWN_REQUEST_FIELDS | vllm if looks_secret(n)] == []


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("name", SECRET_NAMES)
def test_an_argument_named_like_a_secret_is_refused_by_name(cls: type[Any], name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        cls(**{name: KEY}, **model_for(cls))
    text = str(caught.value)
    assert repr(name) in text and KEY not in text and KEY[-8:] not in text


@pytest.mark.parametrize("cls", CHATS, ids=ids(CHATS))
def test_a_request_field_named_like_a_secret_is_refused_at_construction(cls: type[Any]) -> None:
    for given in (
        {EXTRA[cls]: {"hf_token": "hf_abcdefgh"}},
        {"extra_body": {"api_key": "hf_abcdefgh"}},
    ):
        with pytest.raises(ValidationError, match=r"'(hf_token|api_key)' looks like a secret") as c:
            cls(**given)
        assert "hf_abcdefgh" not in str(c.value)


@pytest.mark.parametrize("cls", CHATS, ids=ids(CHATS))
@pytest.mark.parametrize("from_env", [False, True], ids=["argument", "TIR_API_KEY"])
def test_a_request_field_holding_the_key_is_refused_at_construction(
    cls: type[Any], from_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if from_env:
        monkeypatch.setenv("TIR_API_KEY", KEY)
    key = {} if from_env else {"api_key": KEY}
    for given in (
        {"user": KEY},  # an unknown argument: a request field
        {EXTRA[cls]: {"vllm_xargs": {"note": f"Bearer {KEY}"}}},
        {"extra_body": {"user": KEY}},
    ):
        # (An unknown argument is moved with a warning first: not this test's subject.)
        with (
            warnings.catch_warnings(),
            pytest.raises(ValidationError, match="holds the API key") as caught,
        ):
            warnings.simplefilter("ignore", UserWarning)
            cls(**key, **given)
        assert KEY not in str(caught.value)


def chat_request(instance: Any, is_async: bool, **kwargs: Any) -> Any:
    if isinstance(instance, ChatTIRLlama):
        if is_async:
            return asyncio.run(instance.ainvoke([HumanMessage("hi")], **kwargs))
        return instance.invoke([HumanMessage("hi")], **kwargs)
    if is_async:
        return asyncio.run(instance.acomplete("hi", **kwargs))
    return instance.complete("hi", **kwargs)


@pytest.mark.parametrize("cls", CHATS, ids=ids(CHATS))
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    "per_call",
    [
        {"api_key": KEY},
        {"openai_api_key": KEY},
        {"hf_token": "hf_abcdefgh"},
        {"user": KEY},
        {"extra_body": {"Authorization": "Bearer abc"}},
        {"extra_body": {"metadata": KEY}},
    ],
    ids=["api_key", "openai_api_key", "hf_token", "user=key", "extra_body-name", "extra_body=key"],
)
def test_a_per_call_secret_is_refused_before_anything_is_sent(
    cls: type[Any], is_async: bool, per_call: dict[str, Any], emulator: Emulator
) -> None:
    instance = cls(api_key=KEY, base_url=emulator.base_url)
    with pytest.raises(ValueError, match=r"looks like a secret|holds the API key") as caught:
        chat_request(instance, is_async, **per_call)
    assert KEY not in str(caught.value) and "hf_abcdefgh" not in str(caught.value)
    assert emulator.requests == []
    # What is no secret still goes (max_tokens ends in "tokens", stop_token_ids in "ids").
    chat_request(instance, is_async, max_tokens=3, stop_token_ids=[7])
    (body,) = body_fields(emulator)
    assert (body["max_tokens"], body["stop_token_ids"]) == (3, [7])


def test_a_bound_secret_is_refused_before_anything_is_sent(emulator: Emulator) -> None:
    llm = ChatTIRLlama(api_key=KEY, base_url=emulator.base_url)
    with pytest.raises(ValueError, match="'access_token' looks like a secret"):
        llm.bind(access_token="tok-abcdefgh").invoke("hi")
    assert emulator.requests == []


def test_build_payload_refuses_secrets_by_name_and_by_value() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="'api_key' looks like a secret"):
        build_payload(messages, "m", api_key="x")
    with pytest.raises(ValueError, match="'token' looks like a secret"):
        build_payload(messages, "m", extra_body={"token": "x"})
    with pytest.raises(ValueError, match="'user' holds the API key"):
        build_payload(messages, "m", key_to_refuse=KEY, user=KEY)
    # The conversation is the user's to say, and a short key ("k") matches only itself.
    payload = build_payload(
        [{"role": "user", "content": f"my key is {KEY}"}], "m", key_to_refuse=KEY, max_tokens=5
    )
    assert payload["max_tokens"] == 5
    build_payload(messages, "m", key_to_refuse="k", user="kayak", max_tokens=5)
    with pytest.raises(ValueError, match="holds the API key"):
        build_payload(messages, "m", key_to_refuse="k", user="k")


# -- unknown arguments of embeddings and rerank were dropped without a word -----------------------


@pytest.mark.parametrize(
    "cls",
    [c for c in CLASSES if c not in CHATS],
    ids=ids([c for c in CLASSES if c not in CHATS]),
)
def test_an_unknown_argument_of_embeddings_or_rerank_is_refused(cls: type[Any]) -> None:
    with pytest.raises(ValidationError, match="no argument 'frobnicate'"):
        cls(frobnicate=1, **model_for(cls))
    with pytest.raises(ValidationError, match="did you mean 'max_concurrency'"):
        cls(max_concurency=4, **model_for(cls))


def test_strict_is_a_field_of_tir_llama_llm_and_a_binding_in_langchain(
    emulator: Emulator,
) -> None:
    # OpenAILike's `strict` is TIRLlamaLLM's own field (forced calls are strict when it is
    # None); ChatTIRLlama takes strict per binding, as ChatOpenAI does, and says so.
    llm = TIRLlamaLLM(api_key=KEY, base_url=emulator.base_url, strict=False)
    assert llm.strict is False
    with pytest.raises(ValidationError, match=r"bind_tools\(\.\.\., strict=\.\.\.\)"):
        ChatTIRLlama(api_key=KEY, base_url=emulator.base_url, strict=True)
