"""`tir-llama doctor`: the configuration checked, one request sent, the other models probed."""

from __future__ import annotations

import argparse
import time
from typing import TextIO

from tir_transport import (
    ChatClient,
    ConfigurationError,
    EmbeddingsClient,
    RerankClient,
    TIRConfig,
    TIRError,
    context_window,
)

# Only for tir-llama's own packages; for doctor: which variable the key came from, and
# the no-tool-parser 400.
from tir_transport.adapter import (
    API_KEY_ENV_VARS,
    EMBEDDING_MODEL_ENV_VARS,
    RERANK_MODEL_ENV_VARS,
    ModelsClient,
    build_payload,
    env_first,
    is_tools_rejection,
)

from ._common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, _config, _one_line
from ._words import shell_words

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time.",
        "parameters": {"type": "object", "properties": {}},
    },
}


def doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check the configuration, send a one-token request, probe native tools.

    Then one small request to each model `TIR_EMBEDDING_MODEL` / `TIR_RERANK_MODEL` names,
    each reported; any failure makes the exit status 1. What failed goes to `err`, the rest
    of the report to `out`.
    """
    config = _config(args)
    key_source = next((name for name in API_KEY_ENV_VARS if env_first((name,))), None)
    print(f"model:       {config.model}", file=out)
    print(f"project:     {config.project_id or '(none)'}", file=out)
    missing = config.missing()
    if missing:
        # Every missing setting at once: fixing them one run at a time is no fun.
        for item in missing:
            print(f"missing:     {shell_words(item)}", file=err)
        return EXIT_REFUSED
    try:
        url = config.chat_url()
    except ConfigurationError as e:
        print(f"url:         cannot be built: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    print(f"url:         {url}", file=out)
    print(f"api key:     set (from {key_source or 'the command line'}; never shown)", file=out)
    # Tools are probed explicitly below; the plain request must not fall back by itself.
    # One try each: doctor reports what the endpoint does (a 429 or a 503 too); retried, a
    # server that takes the connection and never answers kept it silent for three minutes.
    client = ChatClient(config.replace(max_retries=0), tool_mode="native")
    messages = [{"role": "user", "content": "Reply with one word: ready"}]
    try:
        started = time.perf_counter()
        reply = client.create(build_payload(messages, config.model, max_tokens=1))
        elapsed = time.perf_counter() - started
        print(f"request:     ok in {elapsed * 1000:.0f} ms (model {reply.model})", file=out)
        try:
            client.create(
                build_payload(
                    messages, config.model, max_tokens=1, tools=[_PROBE_TOOL], tool_choice="auto"
                )
            )
            print("tools:       native tool calling is on", file=out)
        except TIRError as e:
            if not is_tools_rejection(e):
                raise
            print(
                "tools:       native tool calling is off here: tools go in the prompt "
                "(tool_mode='auto' does this by itself)",
                file=out,
            )
    except TIRError as e:
        print(f"request:     failed: {_one_line(e)}", file=err)
        chat_ok = False
    else:
        chat_ok = True
    finally:
        client.close()
    if chat_ok:
        _check_window(config, args.context_window, out)
    # Every model that is set, checked and reported, whatever the chat request gave.
    models_ok = _check_other_models(args, out, err)
    return EXIT_OK if chat_ok and models_ok else EXIT_FAILED


def _probe_config(args: argparse.Namespace, model: str) -> TIRConfig:
    # A probe: a model server that stalls must not hold doctor for minutes (60 s, retried).
    config = _config(args, model)
    return config.replace(timeout=min(config.timeout, _PROBE_TIMEOUT), max_retries=0)


def _check_other_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> bool:
    """Send one small request to each of the embedding and rerank models that are set.

    Returns:
        Whether every one of them answered.
    """
    probes = (
        ("embeddings:  ", EMBEDDING_MODEL_ENV_VARS, _embeds),
        ("rerank:      ", RERANK_MODEL_ENV_VARS, _reranks),
    )
    ok = True
    for name, variables, probe in probes:
        model = env_first(variables)
        if not model:
            continue
        label = f"{name}{model} ({variables[0]})"
        try:
            print(f"{label}: ok{probe(_probe_config(args, model))}", file=out)
        except TIRError as e:
            print(f"{label}: failed: {_one_line(e)}", file=err)
            ok = False
    return ok


def _embeds(config: TIRConfig) -> str:
    """Embed one word; what doctor adds to "ok"."""
    with EmbeddingsClient(config) as embedder:
        (vector,) = embedder.embed(["ready"])
    return f", {len(vector)} dimensions"


def _reranks(config: TIRConfig) -> str:
    """Rerank one document; what doctor adds to "ok"."""
    with RerankClient(config) as reranker:
        reranker.rerank("ready?", ["ready"])
    return ""


_PROBE_TIMEOUT = 10.0


def _served_window(config: TIRConfig) -> int | None:
    """The served window (vLLM's `max_model_len`, `GET {base}/models`), or None if unreported."""
    # A probe: a gateway that never answers /models must not hold doctor for a minute.
    probe = config.replace(timeout=min(config.timeout, _PROBE_TIMEOUT), max_retries=0)
    with ModelsClient(probe) as models:
        try:
            return models.served_window()
        except TIRError:
            # Not every gateway serves /models, and none has to report a window.
            return None


def _check_window(config: TIRConfig, setting: int | None, out: TextIO) -> None:
    """Print the served context window and warn when the one in use disagrees with it."""
    known = context_window(config.model)
    in_use = setting or known
    source = "--context-window" if setting else "the model's, from tir-llama's table"
    served = _served_window(config)
    if served is None:
        said = f"{in_use:,} tokens ({source})" if in_use else "unknown"
        print(f"window:      {said}; the endpoint does not report the one it serves", file=out)
        return
    print(f"window:      {served:,} tokens served (the endpoint's max_model_len)", file=out)
    if in_use != served:
        print(
            f"warning:     the context window in use is {in_use or 'unknown'} ({source}) but "
            f"the endpoint serves {served:,}: pass context_window={served} to ChatTIRLlama / "
            "TIRLlamaLLM so that trimming and LlamaIndex's prompt packing fit",
            file=out,
        )
