"""Bulk chat and embeddings over Ray Data: `chat` and `embed`, checked on the driver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray.data

from tir_transport import (
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_MODEL,
    EMBEDDING_MODEL_HINT,
    TIRConnection,
    TIREmbeddingsConnection,
)
from tir_transport.adapter import argument_names, check_single_choice, refuse_secrets

from ._job import _Job, _start  # noqa: TID251
from ._pacing import _job_pacer  # noqa: TID251
from ._workers import (  # noqa: TID251
    CHAT_COLUMNS,
    EMBED_COLUMNS,
    _ChatWorker,
    _driver,
    _EmbedWorker,
    check_columns,
)

__all__ = ["chat", "embed"]


# The connection's settings, and `model`; everything else a caller passes to `chat` is a
# request field.
# Aliases too: the peers' names for the key and URL (`openai_api_key`, `api_base`, ...) are
# the connection's, never request fields.
_CONFIG_ARGS = frozenset({*argument_names(TIRConnection), "model"})


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {k: v for k, v in options.items() if k in _CONFIG_ARGS}
    request = {k: v for k, v in options.items() if k not in _CONFIG_ARGS}
    return config, request


def _check_schema(ds: ray.data.Dataset, reads: str, adds: Sequence[str], option: str) -> None:
    # Only when the schema is known without running anything (from_items, Parquet); the
    # workers check every batch anyway.
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        check_columns(list(schema.names), reads, adds, option)


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
