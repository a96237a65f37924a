"""A bulk job's actors: each answers its batches with many requests in flight, and writes them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tir_transport import (
    AuthenticationError,
    ChatClient,
    EmbeddingsClient,
    NotFoundError,
    PermissionDeniedError,
    TIRConfig,
    TIRError,
)
from tir_transport.adapter import build_payload, check_inputs, scrub_secret

from ._folder import OutputWriteError  # noqa: TID251
from ._pacing import _ActorLimits, _JobPacerClient  # noqa: TID251
from ._sink import Sink  # noqa: TID251

__all__ = ["BATCHES_AT_ONCE", "CHAT_COLUMNS", "EMBED_COLUMNS", "JobStopped", "check_columns"]


CHAT_COLUMNS = ("response", "finish_reason", "input_tokens", "output_tokens", "error")
EMBED_COLUMNS = ("embedding", "error")


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
        # Said for where the rows come from: a file for the command, a Dataset in Python.
        how = (
            "in the input file"
            if option.startswith("--")
            else f"e.g. ds.rename_columns({{{taken[0]!r}: 'previous_{taken[0]}'}})"
        )
        raise ValueError(
            f"the rows already have the column(s) {', '.join(map(repr, taken))} that this job "
            f"adds (output of an earlier job?): drop or rename them first, {how}"
        )


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


class _Worker:
    """What both workers share: the limits of one actor, and writing its answers.

    `__call__` is async: Ray Data then runs the actor on an event loop and hands it several
    batches at once, so requests stay in flight across batch boundaries; `max_in_flight`
    holds for the whole actor, and its connection pool lives as long as the loop. With a
    `sink`, each answered batch is written at once, and only its file's name goes back.
    """

    columns: tuple[str, ...] = ()

    def __init__(
        self,
        max_in_flight: int,
        pacer: _JobPacerClient | None,
        driver: tuple[str, int],
        sink: Sink | None,
    ) -> None:
        self.stopped: str | None = None
        self.driver_pid = driver[1] if driver[0] == os.uname().nodename else None
        self.limits = _ActorLimits(max_in_flight, pacer, self._check)
        self.sink = sink
        self.batches = asyncio.Semaphore(BATCHES_AT_ONCE)

    def _check(self) -> None:
        """Asked before every request (retries too): is the job still on?

        Raises `_Stopping` when it is stopping. A job whose driver died sends nothing more:
        on the driver's machine each request first checks that its process is alive, and the
        actor ends itself if not (Ray would end it too, but only seconds later, after
        hundreds of requests). On other machines Ray's own clean-up ends the actors.
        """
        if self.stopped is not None:
            raise _Stopping
        if self.driver_pid is not None and not _alive(self.driver_pid):
            os._exit(1)  # nobody is left to read the answers: send nothing more

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


class _ChatWorker(_Worker):
    def __init__(
        self,
        config: TIRConfig,
        request: dict[str, Any],
        prompt_column: str | None,
        messages_column: str | None,
        system: str | None,
        max_in_flight: int,
        pacer: _JobPacerClient | None,
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


class _EmbedWorker(_Worker):
    def __init__(
        self,
        client: EmbeddingsClient,
        text_column: str,
        max_in_flight: int,
        pacer: _JobPacerClient | None,
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
