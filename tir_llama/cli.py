"""`tir-llama`: check a configuration (`doctor`), chat in the terminal, run a job (`batch`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from tir_transport import (
    DEFAULT_MODEL,
    ChatClient,
    ConfigurationError,
    EmbeddingsClient,
    RerankClient,
    TIRConfig,
    TIRConnection,
    TIRError,
    build_payload,
    context_window,
    track_usage,
)

# Not for adapters: which variable the key came from, and the no-tool-parser 400, for doctor.
from tir_transport._config import (
    API_KEY_ENV_VARS,
    EMBEDDING_MODEL_ENV_VARS,
    RERANK_MODEL_ENV_VARS,
    env_first,
)
from tir_transport._http import HTTPClient
from tir_transport._tools import is_tools_rejection

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time.",
        "parameters": {"type": "object", "properties": {}},
    },
}


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The connection settings given as flags (the rest comes from the environment)."""
    given = {
        "project_id": args.project_id,
        "host": args.host,
        "endpoint_id": args.endpoint_id,
        "base_url": args.base_url,
        "timeout": args.timeout,
        "allow_insecure_http": args.allow_insecure_http or None,
    }
    return {name: value for name, value in given.items() if value is not None}


def _config(args: argparse.Namespace, model: str | None = None) -> TIRConfig:
    try:
        connection = TIRConnection(**_connection(args))
    except ValueError as e:  # pydantic's, for a bad flag value: said in one line
        raise ConfigurationError(" ".join(str(e).split())) from None
    return connection.tir_config(model or args.model or DEFAULT_MODEL)


def doctor(args: argparse.Namespace, out: TextIO) -> int:
    """Check the configuration, send a one-token request, probe native tools.

    Then one small request to each model `TIR_EMBEDDING_MODEL` / `TIR_RERANK_MODEL` names,
    each reported; any failure makes the exit status 1.
    """
    config = _config(args)
    key_source = next((name for name in API_KEY_ENV_VARS if env_first((name,))), None)
    print(f"model:       {config.model}", file=out)
    print(f"project:     {config.project_id or '(none)'}", file=out)
    missing = config.missing()
    if missing:
        # Every missing setting at once: fixing them one run at a time is no fun.
        for item in missing:
            print(f"missing:     {item}", file=out)
        return 2
    try:
        url = config.chat_url()
    except ConfigurationError as e:
        print(f"url:         cannot be built: {e}", file=out)
        return 2
    print(f"url:         {url}", file=out)
    print(f"api key:     set (from {key_source or 'the command line'}; never shown)", file=out)
    # Tools are probed explicitly below; the plain request must not fall back by itself.
    client = ChatClient(config, tool_mode="native")
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
        print(f"request:     failed: {e}", file=out)
        chat_ok = False
    else:
        chat_ok = True
    finally:
        client.close()
    if chat_ok:
        _check_window(config, args.context_window, out)
    # Every model that is set, checked and reported, whatever the chat request gave.
    models_ok = _check_other_models(args, out)
    return 0 if chat_ok and models_ok else 1


def _check_other_models(args: argparse.Namespace, out: TextIO) -> bool:
    """Send one small request to each of the embedding and rerank models that are set.

    Returns:
        Whether every one of them answered.
    """
    ok = True
    embedding_model = env_first(EMBEDDING_MODEL_ENV_VARS)
    if embedding_model:
        label = f"embeddings:  {embedding_model} ({EMBEDDING_MODEL_ENV_VARS[0]})"
        try:
            with EmbeddingsClient(_config(args, embedding_model)) as embedder:
                (vector,) = embedder.embed(["ready"])
            print(f"{label}: ok, {len(vector)} dimensions", file=out)
        except TIRError as e:
            print(f"{label}: failed: {e}", file=out)
            ok = False
    rerank_model = env_first(RERANK_MODEL_ENV_VARS)
    if rerank_model:
        label = f"rerank:      {rerank_model} ({RERANK_MODEL_ENV_VARS[0]})"
        try:
            with RerankClient(_config(args, rerank_model)) as reranker:
                reranker.rerank("ready?", ["ready"])
            print(f"{label}: ok", file=out)
        except TIRError as e:
            print(f"{label}: failed: {e}", file=out)
            ok = False
    return ok


_PROBE_TIMEOUT = 10.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of tokens, got {text}")
    return value


def _served_window(config: TIRConfig) -> int | None:
    """The served window (vLLM's `max_model_len`, `GET {base}/models`), or None if unreported."""
    # A probe: a gateway that never answers /models must not hold doctor for a minute.
    probe = config.replace(timeout=min(config.timeout, _PROBE_TIMEOUT), max_retries=0)
    with HTTPClient(probe) as client:
        try:
            listing = client.get("models")
        except TIRError:
            # Not every gateway serves /models, and none has to report a window.
            return None
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return None
    entries = [m for m in models if isinstance(m, dict)]
    # The served model by name if listed (TIR's GenAI names may differ), else the first.
    entry = next((m for m in entries if m.get("id") == config.model), entries[0] if entries else {})
    window = entry.get("max_model_len")
    return window if isinstance(window, int) and window > 0 else None


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


def chat(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """A streaming chat; usage is printed after each turn. An empty line or EOF ends it."""
    config = _config(args)
    client = ChatClient(config)
    history: list[dict[str, Any]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    print(f"chatting with {config.model}; an empty line ends the chat", file=out)
    try:
        while True:
            print("> ", end="", file=out, flush=True)
            line = stdin.readline()
            if not line.strip():
                return 0
            history.append({"role": "user", "content": line.strip()})
            parts: list[str] = []
            with track_usage() as usage:
                for chunk in client.stream(
                    build_payload(history, config.model, stream=True, max_tokens=args.max_tokens)
                ):
                    if chunk.text:
                        parts.append(chunk.text)
                        print(chunk.text, end="", file=out, flush=True)
            history.append({"role": "assistant", "content": "".join(parts)})
            tokens = (
                "the server reported no usage"
                if usage.requests_without_usage
                else f"{usage.input_tokens} in, {usage.output_tokens} out"
            )
            print(f"\n[{tokens}]", file=out, flush=True)
    except TIRError as e:
        print(f"\nerror: {e}", file=out)
        return 1
    finally:
        client.close()


def _batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The `batch` subcommand's arguments (here: parsing them needs no Ray)."""
    parser.add_argument("input", help="a CSV, JSON Lines (.jsonl) or Parquet file or folder")
    parser.add_argument(
        "output", help="a folder; Parquet files, or JSON Lines when it ends in .jsonl"
    )
    parser.add_argument("--prompt-column", default="prompt", help="default: prompt")
    parser.add_argument("--system", help="a system prompt for every row")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--concurrency", type=int, default=2, help="Ray actors (default 2)")
    parser.add_argument(
        "--max-in-flight", type=int, default=16, help="requests in flight per actor (16)"
    )
    parser.add_argument("--rpm", type=float, help="requests per minute for the whole job")
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument(
        "--resume",
        action="store_true",
        help="OUTPUT holds an earlier run's rows: answer only the rows whose --id-column is "
        "not in it yet (Parquet output only)",
    )
    folder.add_argument(
        "--overwrite",
        action="store_true",
        help="OUTPUT holds an earlier run's rows: replace them, once the new output is complete",
    )
    parser.add_argument("--id-column", default="id", help="the rows' ids, for --resume (id)")
    parser.add_argument(
        "--keep-failed",
        action="store_true",
        help="with --resume: keep the rows that carry an error as they are (by default they "
        "are sent again)",
    )
    # Also here, so that `batch ... --debug` works as the error hint suggests.
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )


def batch(args: argparse.Namespace, out: TextIO) -> int:
    """Run a chat job over a table on Ray (`ray_tir`), imported only for this command."""
    try:
        from tir_llama._batch import run
    except ImportError as e:
        print(f"error: {e}", file=out)
        return 2
    config = _connection(args)
    if args.model:
        config["model"] = args.model
    return run(args, config, out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the `tir-llama` command line."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="tir-llama", description=__doc__)
    parser.add_argument("--project-id", help="TIR project id (default: TIR_PROJECT_ID)")
    parser.add_argument("--model", help="model name (default: llama3_1_8b_instruct)")
    parser.add_argument("--host", help="inference host (default: TIR_HOST or TIR's)")
    parser.add_argument("--endpoint-id", help="a self-deployed model endpoint's id")
    parser.add_argument("--base-url", help="a full .../v1 URL (default: TIR_BASE_URL)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default 60)")
    parser.add_argument(
        "--allow-insecure-http", action="store_true", help="allow http:// to a remote host"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor_parser = sub.add_parser("doctor", help="check the configuration and the endpoint")
    doctor_parser.add_argument(
        "--context-window",
        type=_positive_int,
        help="the context_window you set on ChatTIRLlama / TIRLlamaLLM, to check against the "
        "endpoint's (default: the model's known window)",
    )
    chat_parser = sub.add_parser("chat", help="a streaming chat in the terminal")
    chat_parser.add_argument("--system", help="a system prompt")
    chat_parser.add_argument("--max-tokens", type=int, default=512)
    _batch_arguments(
        sub.add_parser(
            "batch",
            help="answer every row of a CSV, JSON Lines or Parquet table on Ray "
            '(pip install "tir-llama[ray]")',
            epilog="exit status: 0 every row answered; 1 the job failed part way; 2 refused "
            "before any request; 3 done, some rows carry an error (--resume sends them again); "
            "4 stopped early on an error every row would hit (the key, the model, the project)",
        )
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "doctor":
            return doctor(args, out)
        if args.command == "batch":
            return batch(args, out)
        return chat(args, out, sys.stdin)
    except ConfigurationError as e:
        print(f"error: {e}", file=out)
        return 2
    except Exception as e:
        if args.debug:
            raise
        # One line, not a screen of Ray and pyarrow frames; the frames are one flag away.
        text = " ".join(str(e).split())
        print(
            f"error: {type(e).__name__}: {text[:500]} (run again with --debug for the traceback)",
            file=out,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
