"""The embeddings API over the shared transport: batches, several in flight, order kept."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from .._config import EMBEDDING_MODEL_ENV_VARS, EMBEDDING_MODEL_HINT, TIRConfig
from .._errors import ContextLengthExceededError, InvalidResponseError, TIRError
from .._transport import (
    APIClient,
    HTTPOptions,
    Plan,
    adrive,
    ain_flight,
    check_batching,
    drive,
    in_flight,
)
from .wire import (
    EmbeddingsReply,
    EncodingFormat,
    build_embeddings_payload,
    check_inputs,
    is_encoding_rejection,
    parse_embeddings,
)

__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE",
    "DEFAULT_EMBED_CONCURRENCY",
    "EmbeddingsClient",
]

# vLLM batches inputs itself; 64 texts keep a request well under any body limit and give a
# 10,000-text job enough requests to overlap.
# Told each batch's size once it is embedded (a progress bar's `update`).
Progress = Callable[[int], object]

DEFAULT_EMBED_BATCH_SIZE = 64
DEFAULT_EMBED_CONCURRENCY = 8

# A batch's plan (`EmbeddingsClient._plan`): yields texts to send, is sent their outcome,
# returns each text's vector or error.
_Plan = Plan[list[str], list[list[float]], list[list[float] | TIRError]]


class EmbeddingsClient(APIClient):
    """Embeds texts for one configuration, sync or async: batched, concurrent, in order.

    `config.model` is the embedding model's API name (TIR documents no default); build with
    `EmbeddingsClient.from_env(...)` to read it from `TIR_EMBEDDING_MODEL`.
    """

    model_env_vars = EMBEDDING_MODEL_ENV_VARS

    def __init__(
        self,
        config: TIRConfig,
        *,
        batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        max_concurrency: int = DEFAULT_EMBED_CONCURRENCY,
        encoding_format: EncodingFormat = "base64",
        dimensions: int | None = None,
        truncate_prompt_tokens: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        **options: Unpack[HTTPOptions],
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect; `config.model` is the embedding model.
            batch_size: texts per request.
            max_concurrency: requests in flight at once, for the sync API (threads) too.
            encoding_format: `"base64"` (default: a third of the bytes, decoded in C) or
                `"float"`. A server that rejects base64 is asked for floats from then on; one
                that ignores it is read as it answers.
            dimensions: shorter vectors, for models that support it.
            truncate_prompt_tokens: let the server (vLLM) cut each text to this many tokens
                instead of failing on a text longer than the model's context; recent vLLM
                takes -1 for "the model's own maximum".
            query_prefix: put before every query (e5 models want `"query: "`).
            document_prefix: put before every document (e5 models want `"passage: "`).
            **options: `transport`, or `retry`, `limits`, `http_client`, `http_async_client`
                (see `APIClient`); `limits` hold for the whole transport, `max_concurrency`
                per call.

        Raises:
            ValueError: a batch size or concurrency below 1, an unknown encoding format.
        """
        check_batching(batch_size, max_concurrency)
        if encoding_format not in ("base64", "float"):
            raise ValueError(
                f"encoding_format must be 'base64' or 'float', got {encoding_format!r}"
            )
        super().__init__(config, **options)
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.encoding_format: EncodingFormat = encoding_format
        self.dimensions = dimensions
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    # -- pure steps ------------------------------------------------------------------------

    def _batches(self, texts: Sequence[str], prefix: str | None) -> list[tuple[int, list[str]]]:
        """(start index, texts) per request; every input is checked before anything is sent."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts; for one text use embed_query")
        self.config.require(model_hint=EMBEDDING_MODEL_HINT)
        check_inputs(texts)
        if prefix:
            texts = [prefix + t for t in texts]
        size = self.batch_size
        return [(start, list(texts[start : start + size])) for start in range(0, len(texts), size)]

    def _body(self, texts: list[str]) -> bytes:
        payload = build_embeddings_payload(
            texts,
            self.config.model,
            encoding_format=self.encoding_format,
            dimensions=self.dimensions,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
        )
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _post(self, texts: list[str]) -> tuple[str, bytes, Callable[[Any], EmbeddingsReply], str]:
        count = len(texts)

        def parse(data: Any) -> EmbeddingsReply:
            return parse_embeddings(data, count)

        url = self._url_of("embeddings")
        return url, self._body(texts), parse, self.config.model

    @staticmethod
    def _too_long(error: ContextLengthExceededError, index: int, total: int) -> TIRError:
        located = ContextLengthExceededError(
            f"text {index} (of the {total} given, counting from 0) is longer than the model's "
            f"context: shorten or split it, or pass truncate_prompt_tokens=... to let the "
            f"server cut it. The server said: {error.message}",
            status_code=error.status_code,
            request_id=error.request_id,
            body=error.body,
        )
        located.input_index = index
        located.__cause__ = error
        return located

    def _plan(self, texts: list[str], *, each: bool, known: TIRError | None = None) -> _Plan:
        """The requests one batch needs, as a plan the sync and async drivers both run.

        Yields the texts to send and receives their vectors or the error; returns each
        text's vector or error. A server that refuses base64 is asked for floats (once, for
        the client). A context-length failure (the only failure the server ties to a text,
        without naming it) halves the batch until each too-long text stands alone; any
        other failure is every text's error, at no extra request. `each`: every too-long text
        is found (bulk jobs); otherwise the search stops at the first (it is raised).
        `known`: these texts' outcome is already known (a failed batch whose first half
        passed), so they are not sent as a whole.
        """
        outcome: list[list[float]] | TIRError
        if known is not None:
            outcome = known
        else:
            # Read before sending: another batch in flight may switch the client meanwhile.
            sent_base64 = self.encoding_format == "base64"
            outcome = yield texts
            if sent_base64 and isinstance(outcome, TIRError) and is_encoding_rejection(outcome):
                self.encoding_format = "float"  # for every later request of this client too
                outcome = yield texts
        if not isinstance(outcome, TIRError):
            return list(outcome)
        if not isinstance(outcome, ContextLengthExceededError) or len(texts) == 1:
            return [outcome] * len(texts)
        # One half after the other: the search adds no load beyond its own requests.
        half = len(texts) // 2
        first = yield from self._plan(texts[:half], each=each)
        clean = not any(isinstance(r, TIRError) for r in first)
        if not clean and not each:
            return first
        # The whole failed and its first half did not: the second half fails, unsent.
        second = yield from self._plan(texts[half:], each=each, known=outcome if clean else None)
        return [*first, *second]

    def _send(self, texts: list[str]) -> list[list[float]]:
        reply: EmbeddingsReply = self.transport.post(*self._post(texts))
        return reply.vectors

    async def _asend(self, texts: list[str]) -> list[list[float]]:
        reply: EmbeddingsReply = await self.transport.apost(*self._post(texts))
        return reply.vectors

    def _vectors(
        self, results: list[list[float] | TIRError], start: int, total: int
    ) -> list[list[float]]:
        """The vectors of a batch, or the first error (a too-long text named by its index)."""
        vectors: list[list[float]] = []
        for offset, result in enumerate(results):
            if isinstance(result, ContextLengthExceededError):
                raise self._too_long(result, start + offset, total)
            if isinstance(result, TIRError):
                raise result
            vectors.append(result)
        return vectors

    # -- sync ------------------------------------------------------------------------------

    def _send_batch(
        self, start: int, texts: list[str], total: int, progress: Progress | None
    ) -> list[list[float]]:
        vectors = self._vectors(drive(self._plan(texts, each=False), self._send), start, total)
        if progress is not None:
            progress(len(vectors))
        return vectors

    def embed(
        self,
        texts: Sequence[str],
        *,
        prefix: str | None = None,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Embed `texts`, one vector per text in the same order.

        Batches of `batch_size` go out up to `max_concurrency` at a time (on threads).

        Args:
            texts: the texts; none may be empty.
            prefix: put before every text (see `embed_documents` / `embed_query`).
            progress: called with each batch's size once it is embedded (a progress bar's
                `update`; from the batch's thread in the sync API).

        Raises:
            InputError: a text is empty or not a str (nothing is sent).
            ContextLengthExceededError: a text is too long; `input_index` names it.
            TIRError: any other failure, after the retries the policy allows.
        """
        batches = self._batches(texts, prefix)
        total = len(texts)
        vectors = in_flight(
            lambda job: self._send_batch(*job, total, progress),
            batches,
            self.max_concurrency,
            "tir-embed",
        )
        return _one_width([v for batch in vectors for v in batch])

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed documents (with `document_prefix`, when set)."""
        return self.embed(texts, prefix=self.document_prefix)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with `query_prefix`, when set)."""
        return self.embed([text], prefix=self.query_prefix)[0]

    # -- async -----------------------------------------------------------------------------

    async def _asend_batch(
        self, start: int, texts: list[str], total: int, progress: Progress | None
    ) -> list[list[float]]:
        results = await adrive(self._plan(texts, each=False), self._asend)
        vectors = self._vectors(results, start, total)
        if progress is not None:
            progress(len(vectors))
        return vectors

    async def aembed(
        self,
        texts: Sequence[str],
        *,
        prefix: str | None = None,
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """Async twin of `embed`: batches go out up to `max_concurrency` at a time."""
        batches = self._batches(texts, prefix)
        total = len(texts)
        vectors = await ain_flight(
            lambda job: self._asend_batch(*job, total, progress), batches, self.max_concurrency
        )
        return _one_width([v for batch in vectors for v in batch])

    async def aembed_each(
        self, texts: Sequence[str], *, prefix: str | None = None
    ) -> list[list[float] | TIRError]:
        """Embed `texts`, giving each its vector or its own error, never raising for one.

        For bulk jobs, where one bad text must not cost the others their vectors. Batches of
        `batch_size` go out up to `max_concurrency` at a time. A batch that fails because a
        text is too long (the only failure the server ties to a text) is halved until each
        too-long text stands alone: a batch of B texts with k of them too long costs at most
        1 + 2k*ceil(log2 B) requests, never more than 2B - 1. Any other failure (a bad key, a
        429 or a 5xx after the retries, a timeout) is every text of that batch's error, at no
        extra request: sending the texts one by one would multiply the load exactly when the
        server asks for less.

        Raises:
            InputError: a text is empty or not a str (check them first: nothing is sent).
        """
        batches = self._batches(texts, prefix)
        results = await ain_flight(
            lambda job: adrive(self._plan(job[1], each=True), self._asend),
            batches,
            self.max_concurrency,
        )
        return [r for batch in results for r in batch]

    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Async twin of `embed_documents`."""
        return await self.aembed(texts, prefix=self.document_prefix)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of `embed_query`."""
        return (await self.aembed([text], prefix=self.query_prefix))[0]


def _one_width(vectors: list[list[float]]) -> list[list[float]]:
    """The vectors of one call, refused if two of its batches came back of other widths.

    (Each reply's vectors are checked alike; two replies differing means two models answered,
    a gateway's pool, say: their vectors are not comparable.)
    """
    if len({len(v) for v in vectors}) > 1:
        widths = sorted({len(v) for v in vectors})
        raise InvalidResponseError(
            f"the batches of one call came back with vectors of different widths {widths}: "
            "the server answered them with different models; their vectors cannot be compared"
        )
    return vectors
