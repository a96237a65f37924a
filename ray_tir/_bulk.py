"""Bulk chat and embeddings over Ray Data: actors, each with many requests in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray
import ray.data

from tir_transport import (
    CONNECTION_FIELDS,
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_MODEL,
    EMBEDDING_MODEL_HINT,
    ChatClient,
    EmbeddingsClient,
    Limits,
    RatePacer,
    TIRConfig,
    TIRConnection,
    TIREmbeddingsConnection,
    TIRError,
    build_payload,
    check_inputs,
    check_single_choice,
    scrub_secret,
)

__all__ = ["CHAT_COLUMNS", "EMBED_COLUMNS", "chat", "embed"]

CHAT_COLUMNS = ("response", "finish_reason", "input_tokens", "output_tokens", "error")
EMBED_COLUMNS = ("embedding", "error")

# The connection's settings, and `model`; everything else a caller passes to `chat` is a
# request field.
_CONFIG_ARGS = frozenset({*CONNECTION_FIELDS, "request_timeout", "model"})


# Ray Data restarts an actor whose process died and retries its batches (max_restarts and
# max_task_retries are -1 for actor pools by default): no row is lost.
def _actors(concurrency: int) -> ray.data.ActorPoolStrategy:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    return ray.data.ActorPoolStrategy(size=concurrency)


class _JobPacer:
    """One pace for a whole job: every actor, on every node, reserves its requests here."""

    def __init__(self, requests_per_minute: float) -> None:
        self.pacer = RatePacer(requests_per_minute)

    def reserve(self) -> float:
        """The wall-clock time at which the caller may send.

        A time, not a wait: a wait would start only when the answer reached the caller, and
        answers that take longer to arrive than others would bunch requests together.
        (Nodes' clocks agree to NTP's precision; on one machine they are one clock.)
        """
        return time.time() + self.pacer.reserve()


# The Ray actor class of `_JobPacer` (typed Any: Ray's decorator is not typed for mypy).
_JobPacerActor: Any = ray.remote(num_cpus=0)(_JobPacer)


class _JobPacerClient:
    """An actor's `RemotePacer` for its `Limits`: asks the job's pacer actor."""

    # A send time that reaches the actor later than this is not used: the actor's event loop
    # was busy (a first request's setup, a pause), and sending at once would squeeze the pace
    # (seen here: the opening burst's times arriving 0.2 s late, on top of the ones after it).
    LATE = 0.05

    def __init__(self, pacer: Any) -> None:
        self.pacer = pacer

    async def reserve(self) -> float:
        """Seconds to wait before sending, from a send time the job's pacer gave."""
        while True:
            when: float = await self.pacer.reserve.remote()
            wait = when - time.time()
            if wait >= -self.LATE:
                return max(0.0, wait)
            # That send time is spent; a new one is taken at the end of the queue.


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {k: v for k, v in options.items() if k in _CONFIG_ARGS}
    request = {k: v for k, v in options.items() if k not in _CONFIG_ARGS}
    return config, request


def _describe(error: BaseException, secret: str) -> str:
    # Our errors never carry the key; anything else is scrubbed all the same.
    return scrub_secret(f"{type(error).__name__}: {error}", secret)


def check_columns(names: Sequence[str], reads: str, adds: Sequence[str], option: str) -> None:
    """Fail with what to do, before any request, when the rows do not fit the job.

    Without this, a missing input column is a KeyError deep inside pyarrow, and an output
    column that already exists (rows from an earlier job) is added a second time.
    """
    if reads not in names:
        raise ValueError(
            f"the rows have no column {reads!r} (they have {', '.join(map(repr, names))}): "
            f"name the right one with {option}" + ("" if option.startswith("--") else "=...")
        )
    taken = [name for name in adds if name in names]
    if taken:
        raise ValueError(
            f"the rows already have the column(s) {', '.join(map(repr, taken))} that this job "
            "adds (output of an earlier job?): drop or rename them first, e.g. "
            f"ds.rename_columns({{{taken[0]!r}: 'previous_{taken[0]}'}})"
        )


def _check_schema(ds: ray.data.Dataset, reads: str, adds: Sequence[str], option: str) -> None:
    # Only when the schema is known without running anything (from_items, Parquet); the
    # workers check every batch anyway.
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        check_columns(list(schema.names), reads, adds, option)


def _job_pacer(requests_per_minute: float | None) -> Any:
    if requests_per_minute is None:
        return None
    RatePacer(requests_per_minute)  # a bad rate fails here, on the driver
    return _JobPacerActor.remote(requests_per_minute)


class _Worker:
    """What both workers share: the limits of one actor.

    `__call__` is async: Ray Data then runs the actor on an event loop and hands it several
    batches at once, so requests stay in flight across batch boundaries; `max_in_flight`
    holds for the whole actor, and its connection pool lives as long as the loop.
    """

    def __init__(self, max_in_flight: int, pacer: Any) -> None:
        self.limits = Limits(
            max_in_flight=max_in_flight,
            remote_pacer=_JobPacerClient(pacer) if pacer is not None else None,
        )


class _ChatWorker(_Worker):
    def __init__(
        self,
        config: TIRConfig,
        request: dict[str, Any],
        prompt_column: str | None,
        messages_column: str | None,
        system: str | None,
        max_in_flight: int,
        pacer: Any,
    ) -> None:
        super().__init__(max_in_flight, pacer)
        self.client = ChatClient(config, limits=self.limits)
        self.secret = config.secret()
        self.request = request
        self.prompt_column = prompt_column
        self.messages_column = messages_column
        self.system = system

    def _messages(self, value: Any) -> list[dict[str, Any]]:
        if self.messages_column is not None:
            if not isinstance(value, list):
                raise TypeError(f"{self.messages_column} holds {type(value).__name__}, not a list")
            messages = [dict(m) for m in value]
        else:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{self.prompt_column} is empty or not a string: {value!r}")
            messages = [{"role": "user", "content": value}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages

    async def _one(self, value: Any) -> tuple[Any, ...]:
        try:
            body = build_payload(self._messages(value), self.client.config.model, **self.request)
            reply = await self.client.acreate(body)
        except Exception as e:  # a bad row never fails the job: it carries its error
            return None, None, None, None, _describe(e, self.secret)
        tokens = reply.usage
        return (
            reply.text or "",
            reply.finish_reason,
            tokens.input_tokens if tokens else None,
            tokens.output_tokens if tokens else None,
            None,
        )

    async def _all(self, values: list[Any]) -> list[tuple[Any, ...]]:
        return list(await asyncio.gather(*(self._one(v) for v in values)))

    async def __call__(self, batch: pa.Table) -> pa.Table:
        column = self.messages_column or self.prompt_column
        assert column is not None
        option = "messages_column" if self.messages_column else "prompt_column"
        check_columns(batch.column_names, column, CHAT_COLUMNS, option)
        results = await self._all(batch.column(column).to_pylist())
        types = (pa.string(), pa.string(), pa.int64(), pa.int64(), pa.string())
        for index, (name, kind) in enumerate(zip(CHAT_COLUMNS, types, strict=True)):
            batch = batch.append_column(name, pa.array([r[index] for r in results], type=kind))
        return batch


def chat(
    ds: ray.data.Dataset,
    *,
    prompt_column: str = "prompt",
    messages_column: str | None = None,
    system: str | None = None,
    concurrency: int = 2,
    max_in_flight: int = 16,
    requests_per_minute: float | None = None,
    batch_size: int | None = None,
    num_cpus: float = 0.5,
    **options: Any,
) -> ray.data.Dataset:
    """Answer every row of `ds` with a TIR chat model; rows keep their columns.

    Each row gains `response`, `finish_reason`, `input_tokens`, `output_tokens` (None when the
    server reported no usage) and `error` (None, or the error's class and message after the
    retries: a bad row never fails the job, and never carries the key).

    Args:
        ds: the rows.
        prompt_column: a column of user prompts (str).
        messages_column: instead, a column of OpenAI-style message lists.
        system: a system prompt put before every row's messages.
        concurrency: Ray actors (each with its own connection pool).
        max_in_flight: requests in flight inside each actor.
        requests_per_minute: for the whole job, across every actor and node.
        batch_size: rows per Ray batch (default: 4 x `max_in_flight`).
        num_cpus: CPUs Ray reserves for each actor (waiting on the network takes little).
        **options: configuration (`api_key`, `project_id`, `model`, `host`, `endpoint_id`,
            `base_url`, `timeout`, `max_retries`) and request fields (`temperature`,
            `max_tokens`, `top_p`, `stop`, `seed`, `extra_body`, ...).

    Raises:
        ConfigurationError: settings missing (all named at once), before anything runs.
        ValueError: the rows lack the prompt (or messages) column, or already have a column
            this job adds; raised here when the schema is known, else by the job.
    """
    config_args, request = _split_options(options)
    check_single_choice(request)  # on the driver, not as an error on every row
    model = config_args.pop("model", None) or DEFAULT_MODEL
    config = TIRConnection(**config_args).tir_config(model)
    config.require()
    if messages_column:
        _check_schema(ds, messages_column, CHAT_COLUMNS, "messages_column")
    else:
        _check_schema(ds, prompt_column, CHAT_COLUMNS, "prompt_column")
    return ds.map_batches(
        _ChatWorker,
        fn_constructor_kwargs={
            "config": config,
            "request": request,
            "prompt_column": None if messages_column else prompt_column,
            "messages_column": messages_column,
            "system": system,
            "max_in_flight": max_in_flight,
            "pacer": _job_pacer(requests_per_minute),
        },
        batch_size=batch_size or 4 * max_in_flight,
        batch_format="pyarrow",
        compute=_actors(concurrency),
        num_cpus=num_cpus,
    )


class _EmbedWorker(_Worker):
    def __init__(
        self,
        client: EmbeddingsClient,
        text_column: str,
        max_in_flight: int,
        pacer: Any,
    ) -> None:
        super().__init__(max_in_flight, pacer)
        self.client = client
        self.client.limits = self.limits
        self.secret = client.config.secret()
        self.text_column = text_column

    async def _all(self, texts: list[Any]) -> list[list[float] | str]:
        results: list[list[float] | str] = []
        for text in texts:
            try:
                check_inputs([text])
                results.append([])
            except TIRError as e:
                results.append(_describe(e, self.secret))
        good = [i for i, r in enumerate(results) if not isinstance(r, str)]
        # Each row gets its vector or its own error; only a too-long text makes its batch
        # be split (see EmbeddingsClient.aembed_each for the bound on requests).
        answers = await self.client.aembed_each(
            [texts[i] for i in good], prefix=self.client.document_prefix
        )
        for i, answer in zip(good, answers, strict=True):
            results[i] = _describe(answer, self.secret) if isinstance(answer, TIRError) else answer
        return results

    async def __call__(self, batch: pa.Table) -> pa.Table:
        check_columns(batch.column_names, self.text_column, EMBED_COLUMNS, "text_column")
        texts = batch.column(self.text_column).to_pylist()
        results = await self._all(texts)
        vectors = [None if isinstance(r, str) else r for r in results]
        errors = [r if isinstance(r, str) else None for r in results]
        batch = batch.append_column("embedding", pa.array(vectors, type=pa.list_(pa.float32())))
        return batch.append_column("error", pa.array(errors, type=pa.string()))


def embed(
    ds: ray.data.Dataset,
    *,
    text_column: str = "text",
    model: str | None = None,
    batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
    concurrency: int = 2,
    max_in_flight: int = 8,
    requests_per_minute: float | None = None,
    num_cpus: float = 0.5,
    **options: Any,
) -> ray.data.Dataset:
    """Embed every row of `ds` with a TIR embedding model; rows keep their columns.

    Each row gains `embedding` (its own vector, or None) and `error` (None, or the error's
    class and message: an empty text, a text too long for the model, a failure after the
    retries). Requests: one per `batch_size` rows (plus the retries of 429s, 5xx and dropped
    connections); a batch that holds k texts too long for the model is halved until they
    stand alone (at most 1 + 2k*ceil(log2 batch_size) requests for it); any other failure
    is the error of its batch's rows, at no extra request.

    Args:
        ds: the rows.
        text_column: the column of texts.
        model: the embedding model's API name (default: `TIR_EMBEDDING_MODEL`).
        batch_size: texts per request.
        concurrency: Ray actors.
        max_in_flight: requests in flight inside each actor.
        requests_per_minute: for the whole job, across every actor and node.
        num_cpus: CPUs Ray reserves for each actor.
        **options: configuration (as `chat`) and `EmbeddingsClient` options (`dimensions`,
            `truncate_prompt_tokens`, `document_prefix`, `encoding_format`).

    Raises:
        ConfigurationError: settings missing (the model included), before anything runs.
        ValueError: the rows lack `text_column`, or already have `embedding` or `error`;
            raised here when the schema is known, else by the job.
    """
    unknown = set(options) - set(TIREmbeddingsConnection.model_fields) - {"request_timeout"}
    if unknown:
        raise TypeError(f"embed() got unknown option(s): {', '.join(sorted(unknown))}")
    settings = TIREmbeddingsConnection(model=model, max_concurrency=max_in_flight, **options)
    client = settings.embeddings_client(batch_size)
    client.config.require(model_hint=EMBEDDING_MODEL_HINT)
    _check_schema(ds, text_column, EMBED_COLUMNS, "text_column")
    return ds.map_batches(
        _EmbedWorker,
        fn_constructor_kwargs={
            "client": client,
            "text_column": text_column,
            "max_in_flight": max_in_flight,
            "pacer": _job_pacer(requests_per_minute),
        },
        batch_size=batch_size * max_in_flight,
        batch_format="pyarrow",
        compute=_actors(concurrency),
        num_cpus=num_cpus,
    )
