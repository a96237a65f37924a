"""Bulk chat and embeddings over Ray Data: actors, each with many requests in flight."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from tir_transport import (
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_MODEL,
    EMBEDDING_MODEL_HINT,
    AuthenticationError,
    ChatClient,
    EmbeddingsClient,
    Limits,
    NotFoundError,
    PermissionDeniedError,
    RatePacer,
    TIRConfig,
    TIRConnection,
    TIREmbeddingsConnection,
    TIRError,
)
from tir_transport.adapter import (
    argument_names,
    build_payload,
    check_inputs,
    check_single_choice,
    refuse_secrets,
    scrub_secret,
)

from ._output import Format, OutputWriteError, Progress, Sink  # noqa: TID251

__all__ = ["CHAT_COLUMNS", "EMBED_COLUMNS", "JobStopped", "chat", "embed", "job_of"]

CHAT_COLUMNS = ("response", "finish_reason", "input_tokens", "output_tokens", "error")
EMBED_COLUMNS = ("embedding", "error")

# The connection's settings, and `model`; everything else a caller passes to `chat` is a
# request field.
# Aliases too: the peers' names for the key and URL (`openai_api_key`, `api_base`, ...) are
# the connection's, never request fields.
_CONFIG_ARGS = frozenset({*argument_names(TIRConnection), "model"})


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


class JobStopped(RuntimeError):
    """The job stopped early: an error every row would hit (the key, the project, the model).

    Raised after the first such failures, before paying for the rest; the rows answered
    before it are written, the others are still pending (resume once it is fixed).
    """


# Failures that no row escapes: the key (401), its rights (403), the model, project or
# endpoint (404). Anything else (a 400 for one prompt, a 429, a 5xx) is the row's own.
_FATAL = (AuthenticationError, PermissionDeniedError, NotFoundError)
_HINTS = {
    AuthenticationError: "set TIR_API_KEY to a valid key (tir-llama doctor checks it)",
    PermissionDeniedError: "check that the key belongs to TIR_PROJECT_ID and may use the model",
    NotFoundError: "check --model, TIR_PROJECT_ID, --endpoint-id or the base URL "
    "(tir-llama doctor checks them)",
}
# Batches one actor answers at once: the bound on what a kill loses is this many batches per
# actor (each written as soon as it is answered), whatever the job's size.
BATCHES_AT_ONCE = 2


class _Stopping(Exception):
    """No request is sent once the job is stopping (the row stays pending)."""


def _driver() -> tuple[str, int]:
    return os.uname().nodename, os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Guard:
    """Asked before every request (retries too): is the job still on?

    A job whose driver died sends nothing more: on the driver's machine each request first
    checks that its process is alive, and the actor ends itself if not (Ray would end it
    too, but only seconds later, after hundreds of requests). On other machines Ray's own
    clean-up ends the actors.
    """

    def __init__(self, worker: _Worker, driver: tuple[str, int], pacer: Any) -> None:
        self.worker = worker
        self.driver_pid = driver[1] if driver[0] == os.uname().nodename else None
        self.pacer = _JobPacerClient(pacer) if pacer is not None else None

    async def reserve(self) -> float:
        """Seconds to wait before sending; raises when the job is stopping."""
        if self.worker.stopped is not None:
            raise _Stopping
        if self.driver_pid is not None and not _alive(self.driver_pid):
            os._exit(1)  # nobody is left to read the answers: send nothing more
        return await self.pacer.reserve() if self.pacer is not None else 0.0


class _Worker:
    """What both workers share: the limits of one actor, and writing its answers.

    `__call__` is async: Ray Data then runs the actor on an event loop and hands it several
    batches at once, so requests stay in flight across batch boundaries; `max_in_flight`
    holds for the whole actor, and its connection pool lives as long as the loop. With a
    `sink`, each answered batch is written at once, and only its file's name goes back.
    """

    columns: tuple[str, ...] = ()

    def __init__(
        self, max_in_flight: int, pacer: Any, driver: tuple[str, int], sink: Sink | None
    ) -> None:
        self.stopped: str | None = None
        self.limits = Limits(max_in_flight=max_in_flight, remote_pacer=_Guard(self, driver, pacer))
        self.sink = sink
        self.batches = asyncio.Semaphore(BATCHES_AT_ONCE)

    def _fatal(self, error: BaseException, description: str) -> bool:
        """Whether `error` stops the job (and note the first such error)."""
        if isinstance(error, _Stopping):
            return True
        if not isinstance(error, _FATAL):
            return False
        if self.stopped is None:
            hint = next(h for kind, h in _HINTS.items() if isinstance(error, kind))
            self.stopped = f"{description}: every row would fail the same way; {hint}"
        return True

    async def _answer(self, batch: pa.Table) -> tuple[pa.Table, list[bool]]:
        raise NotImplementedError

    async def __call__(self, batch: pa.Table) -> pa.Table:
        async with self.batches:
            table, fatal = await self._answer(batch)
        stopped = self.stopped
        if stopped is not None:
            # The rows that met the job-wide error stay pending (not written as failed); the
            # ones answered before it are kept.
            table = table.filter(pa.array([not f for f in fatal], type=pa.bool_()))
            if self.sink is None:
                raise JobStopped(stopped)
        if self.sink is None:
            return table
        # With a sink the driver is told in the output, not by an exception: Ray Data does
        # not carry a task's exception (only its text) back to the driver.
        name, failed = None, None
        if table.num_rows:
            try:
                name = self.sink.write(table)
            except OutputWriteError as e:
                failed = str(e)
        # What the batch holds, for the driver's progress (rows, errors, tokens).
        counts = {
            name: (pc.sum(table.column(name)).as_py() or 0) if name in table.column_names else 0
            for name in ("input_tokens", "output_tokens")
        }
        errors = table.num_rows - table.column("error").null_count
        return pa.table(
            {
                "file": pa.array([name], pa.string()),
                "stopped": pa.array([stopped], pa.string()),
                "failed": pa.array([failed], pa.string()),
                "rows": pa.array([table.num_rows], pa.int64()),
                "errors": pa.array([errors], pa.int64()),
                "input_tokens": pa.array([counts["input_tokens"]], pa.int64()),
                "output_tokens": pa.array([counts["output_tokens"]], pa.int64()),
            }
        )


@dataclass
class _Job:
    """What `chat` or `embed` will run, kept so that `write_output` can run it into a folder."""

    source: ray.data.Dataset
    worker: type[_Worker]
    kwargs: dict[str, Any]
    batch_size: int
    concurrency: int
    num_cpus: float
    settings: dict[str, Any] = field(default_factory=dict)

    def plan(self, sink: Sink | None) -> ray.data.Dataset:
        return self.source.map_batches(
            self.worker,
            fn_constructor_kwargs={**self.kwargs, "sink": sink},
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=_actors(self.concurrency),
            num_cpus=self.num_cpus,
        )

    def run(
        self, folder: Path, fmt: Format, run: str, progress: Progress | None = None
    ) -> list[str]:
        """Run the job, its actors writing into `folder`; return the files written.

        `progress`, if given, is called on the driver once per batch written, with that
        batch's rows, rows with an error, input tokens and output tokens.

        Raises:
            JobStopped: an error every row would hit; the job stops at the first report.
            OutputWriteError: a file could not be written; the job stops there.
        """
        names: list[str] = []
        batches = iter(
            self.plan(Sink(folder, fmt, run)).iter_batches(batch_format="pyarrow", batch_size=None)
        )
        answered = False
        try:
            for batch in batches:
                table: pa.Table = batch
                report: dict[str, list[Any]] = table.to_pydict()
                names += [name for name in report["file"] if name]
                if progress is not None:
                    for counts in zip(
                        report["rows"],
                        report["errors"],
                        report["input_tokens"],
                        report["output_tokens"],
                        strict=True,
                    ):
                        if counts[0]:
                            progress(*counts)
                for stopped, failed in zip(report["stopped"], report["failed"], strict=True):
                    if failed:
                        raise OutputWriteError(failed)
                    if stopped:
                        raise JobStopped(stopped)
            answered = True
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops Ray Data's executor, and with it the actors
            if not answered:  # actors may still hold requests: none is sent after we return
                _await_actors_end(self.worker.__name__)
        # A batch Ray ran again (its actor died) was written twice: the copy no task
        # reported is the dead attempt's.
        for path in folder.glob(f"part-{run}-*"):
            if path.name not in names:
                path.unlink()
        return names


# How long a job's end waits for its actors to be gone (Ray ends them within a second or
# two; a machine under load can take longer, and past this the job returns anyway).
ACTORS_END_SECONDS = 15.0


def _await_actors_end(class_name: str) -> None:
    """Return once this driver's actors of `class_name` are dead (or after a bound).

    Ray Data's executor asks Ray to kill its actors and returns at once; until each is gone
    it can still send what it held and write a file into the folder. A job that returns
    before its last batch (stopped early, or failed) must not: a resume started at once
    would pay twice for those rows, and find files it did not expect. Ray's actor table is
    read from its GCS (Ray's public state API needs the dashboard, which the command does
    not start); Ray is pinned, and if that table cannot be read the job returns without
    waiting, as before.
    """
    try:
        from ray._private import state  # imported here: Ray's own GCS view, read only on a stop

        job = ray.get_runtime_context().get_job_id()
        deadline = time.monotonic() + ACTORS_END_SECONDS
        while time.monotonic() < deadline:
            alive = [
                actor
                for actor in state.actors().values()
                if actor.get("ActorClassName") == class_name
                and actor.get("JobID") == job
                and actor.get("State") != "DEAD"
            ]
            if not alive:
                return
            time.sleep(0.05)
    except Exception:  # a view of Ray's internals: never fail a job on it
        return


_jobs: weakref.WeakKeyDictionary[ray.data.Dataset, _Job] = weakref.WeakKeyDictionary()


def job_of(ds: ray.data.Dataset) -> _Job | None:
    """The job `ds` is the answer of (`chat` or `embed`), or None for any other Dataset."""
    return _jobs.get(ds)


def _start(job: _Job) -> ray.data.Dataset:
    ds = job.plan(None)
    _jobs[ds] = job
    return ds


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
        driver: tuple[str, int],
        sink: Sink | None,
    ) -> None:
        super().__init__(max_in_flight, pacer, driver, sink)
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

    async def _one(self, value: Any) -> tuple[tuple[Any, ...], bool]:
        try:
            body = build_payload(self._messages(value), self.client.config.model, **self.request)
            reply = await self.client.acreate(body)
        except Exception as e:  # a bad row never fails the job: it carries its error
            description = _describe(e, self.secret)
            return (None, None, None, None, description), self._fatal(e, description)
        tokens = reply.usage
        return (
            reply.text or "",
            reply.finish_reason,
            tokens.input_tokens if tokens else None,
            tokens.output_tokens if tokens else None,
            None,
        ), False

    async def _answer(self, batch: pa.Table) -> tuple[pa.Table, list[bool]]:
        column = self.messages_column or self.prompt_column
        assert column is not None
        option = "messages_column" if self.messages_column else "prompt_column"
        check_columns(batch.column_names, column, CHAT_COLUMNS, option)
        values = batch.column(column).to_pylist()
        answers = await asyncio.gather(*(self._one(v) for v in values))
        results = [row for row, _ in answers]
        types = (pa.string(), pa.string(), pa.int64(), pa.int64(), pa.string())
        for index, (name, kind) in enumerate(zip(CHAT_COLUMNS, types, strict=True)):
            batch = batch.append_column(name, pa.array([r[index] for r in results], type=kind))
        return batch, [fatal for _, fatal in answers]


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
    retries: a bad row never fails the job, and never carries the key). An error every row
    would hit (a refused key, a missing model or project: 401, 403, 404) stops the job after
    the first ones instead, with `JobStopped`, before paying for the rest.

    Args:
        ds: the rows.
        prompt_column: a column of user prompts (str).
        messages_column: instead, a column of OpenAI-style message lists.
        system: a system prompt put before every row's messages.
        concurrency: Ray actors (each with its own connection pool).
        max_in_flight: requests in flight inside each actor.
        requests_per_minute: for the whole job, across every actor and node.
        batch_size: rows per Ray batch (default: 4 x `max_in_flight`); written to the
            output folder as one file each (`write_output`).
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
    # On the driver, before anything runs: a secret must never become a field of every row's
    # request (nor an error on every row).
    refuse_secrets(request, config.secret(), "option")
    if messages_column:
        _check_schema(ds, messages_column, CHAT_COLUMNS, "messages_column")
    else:
        _check_schema(ds, prompt_column, CHAT_COLUMNS, "prompt_column")
    column = {"messages_column": messages_column} if messages_column else {}
    return _start(
        _Job(
            source=ds,
            worker=_ChatWorker,
            kwargs={
                "config": config,
                "request": request,
                "prompt_column": None if messages_column else prompt_column,
                "messages_column": messages_column,
                "system": system,
                "max_in_flight": max_in_flight,
                "pacer": _job_pacer(requests_per_minute),
                "driver": _driver(),
            },
            batch_size=batch_size or 4 * max_in_flight,
            concurrency=concurrency,
            num_cpus=num_cpus,
            # What makes two answers comparable: recorded with the output, compared on resume.
            settings={
                "kind": "chat",
                "model": model,
                # Which server and project answered (no key in it): another is another model.
                "server": config.chat_url(),
                "endpoint_id": config.endpoint_id,
                "system": system,
                "prompt_column": None if messages_column else prompt_column,
                **column,
                "request": request,
            },
        )
    )


class _EmbedWorker(_Worker):
    def __init__(
        self,
        client: EmbeddingsClient,
        text_column: str,
        max_in_flight: int,
        pacer: Any,
        driver: tuple[str, int],
        sink: Sink | None,
    ) -> None:
        super().__init__(max_in_flight, pacer, driver, sink)
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

    async def _answer(self, batch: pa.Table) -> tuple[pa.Table, list[bool]]:
        check_columns(batch.column_names, self.text_column, EMBED_COLUMNS, "text_column")
        texts = batch.column(self.text_column).to_pylist()
        results = await self._all(texts)
        vectors = [None if isinstance(r, str) else r for r in results]
        errors = [r if isinstance(r, str) else None for r in results]
        batch = batch.append_column("embedding", pa.array(vectors, type=pa.list_(pa.float32())))
        # Embedding rows keep their errors, whatever they are: a batch costs one request.
        return batch.append_column("error", pa.array(errors, type=pa.string())), [False] * len(
            texts
        )


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
    unknown = set(options) - set(argument_names(TIREmbeddingsConnection))
    if unknown:
        raise TypeError(f"embed() got unknown option(s): {', '.join(sorted(unknown))}")
    settings = TIREmbeddingsConnection(model=model, max_concurrency=max_in_flight, **options)
    client = settings.embeddings_client(batch_size)
    client.config.require(model_hint=EMBEDDING_MODEL_HINT)
    _check_schema(ds, text_column, EMBED_COLUMNS, "text_column")
    shaping = {k: v for k, v in options.items() if k not in _CONFIG_ARGS}
    return _start(
        _Job(
            source=ds,
            worker=_EmbedWorker,
            kwargs={
                "client": client,
                "text_column": text_column,
                "max_in_flight": max_in_flight,
                "pacer": _job_pacer(requests_per_minute),
                "driver": _driver(),
            },
            batch_size=batch_size * max_in_flight,
            concurrency=concurrency,
            num_cpus=num_cpus,
            settings={
                "kind": "embed",
                "model": client.config.model,
                "server": client.config.embeddings_url(),
                "endpoint_id": client.config.endpoint_id,
                "text_column": text_column,
                "request": shaping,
            },
        )
    )
