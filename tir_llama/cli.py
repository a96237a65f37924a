"""`tir-llama`: check a configuration (`doctor`), chat in the terminal, run a job (`batch`).

Results go to stdout; errors, prompts, progress and usage to stderr. Exit statuses: 0 done,
1 a request or the job failed, 2 refused before any request (the same missing setting gives 2
in every command), 3 and 4 batch's own (see `_batch`), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import termios
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn, TextIO, TypeVar

from tir_transport import (
    DEFAULT_MODEL,
    ChatClient,
    ConfigurationError,
    EmbeddingsClient,
    RerankClient,
    TIRConfig,
    TIRConnection,
    TIRError,
    context_window,
    track_usage,
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

from ._words import shell_words

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


def _positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of tokens, got {text}")
    return value


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


class _Terminal:
    """A person at a terminal: readline's line editing and history, quiet keys while answering."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def of(cls, stdin: TextIO) -> _Terminal | None:
        """The terminal `stdin` is, or None for a pipe or a file (read as plain lines)."""
        try:
            fd = stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        if stdin is not sys.__stdin__ or not os.isatty(fd):
            return None
        # Imported for its effect: input() then edits lines and keeps a history. A Python
        # built without it still chats, without editing.
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401
        return cls(fd)

    def read(self, prompt: str) -> str:
        """One line, edited with readline; the prompt goes to the terminal, never to a pipe.

        Raises:
            EOFError: Ctrl-D.
            KeyboardInterrupt: Ctrl-C.
        """
        sys.stdout.flush()
        if os.isatty(1):
            return input(prompt)
        # Answers are piped: input() only edits lines (and writes its prompt) on fd 1 when fd 1
        # is a terminal, so fd 1 points at the terminal (stderr) for as long as it reads.
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            return input(prompt)
        finally:
            os.dup2(saved, 1)
            os.close(saved)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """While an answer streams: keys typed are not echoed into it, nor kept for the prompt."""
        try:
            saved = termios.tcgetattr(self.fd)
        except termios.error:
            yield
            return
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO  # lflag; ISIG stays on, so Ctrl-C still stops the answer
        termios.tcsetattr(self.fd, termios.TCSANOW, quiet)
        try:
            yield
        finally:
            termios.tcflush(self.fd, termios.TCIFLUSH)
            termios.tcsetattr(self.fd, termios.TCSANOW, saved)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """A streaming chat: answers on `out`; the banner, prompts and usage on `err`.

    At a terminal: line editing and history, Ctrl-C stops an answer (the conversation goes on
    without it), Ctrl-D or a second Ctrl-C leaves, a failed turn is one line. From a pipe: a
    turn per line until the end of the input; exit status 1 if any turn failed.
    """
    config = _config(args)
    # Every missing setting said before a banner invites typing.
    config.require()
    config.chat_url()
    terminal = _Terminal.of(stdin)
    history: list[dict[str, Any]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    if terminal is not None:
        print(
            f"chatting with {config.model}. Ctrl-C stops an answer; Ctrl-D or Ctrl-C twice leaves.",
            file=err,
        )
    failed = interrupted = False
    with ChatClient(config) as client:
        while True:
            try:
                if terminal is not None:
                    line = terminal.read("> ")
                else:
                    line = stdin.readline()
                    if not line:
                        break
            except EOFError:
                print(file=err)
                break
            except KeyboardInterrupt:
                print(file=err)
                if interrupted:
                    break
                interrupted = True
                print("(Ctrl-C again or Ctrl-D leaves)", file=err)
                continue
            interrupted = False
            text = line.strip()
            if not text:
                continue
            history.append({"role": "user", "content": text})
            shown: list[str] = []
            try:
                with terminal.answering() if terminal else contextlib.nullcontext():
                    tokens = _answer(client, config.model, history, args.max_tokens, out, shown)
            except KeyboardInterrupt:
                history.pop()
                interrupted = True
                print(file=out, flush=True)
                print("[stopped: the conversation goes on without this turn]", file=err)
                continue
            except TIRError as e:
                history.pop()
                failed = True
                if shown:
                    print(file=out, flush=True)
                print(f"error: {_one_line(e)}", file=err, flush=True)
                continue
            history.append({"role": "assistant", "content": "".join(shown)})
            print(file=out, flush=True)
            print(f"[{tokens}]", file=err, flush=True)
    return EXIT_FAILED if failed and terminal is None else EXIT_OK


def _answer(
    client: ChatClient,
    model: str,
    history: list[dict[str, Any]],
    max_tokens: int,
    out: TextIO,
    shown: list[str],
) -> str:
    """Stream one answer to `out` (its parts into `shown`); return the turn's usage, said."""
    with track_usage() as usage:
        stream = client.stream(build_payload(history, model, stream=True, max_tokens=max_tokens))
        try:
            for chunk in stream:
                if chunk.text:
                    shown.append(chunk.text)
                    print(chunk.text, end="", file=out, flush=True)
        finally:
            stream.close()  # a Ctrl-C between two chunks: the response is closed here
    if usage.requests_without_usage:
        return "the server reported no usage"
    return f"{usage.input_tokens} in, {usage.output_tokens} out"


_N = TypeVar("_N", int, float)


def _parsed(text: str, cast: Callable[[str], _N], kind: str) -> _N:
    """A flag's value read with `cast`, or argparse's error that says it is not `kind`."""
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {kind}: {text}") from None


def _positive_number(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _at_least_zero(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _count(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The `batch` subcommand's arguments (here: parsing them needs no Ray)."""
    parser.add_argument("input", help="a CSV, JSON Lines (.jsonl) or Parquet file or folder")
    parser.add_argument(
        "output",
        nargs="?",
        help="a folder: Parquet files, or JSON Lines files when its name ends in .jsonl "
        "(not needed with --estimate)",
    )
    parser.add_argument(
        "--prompt-column", default="prompt", help="the column holding each row's prompt (prompt)"
    )
    parser.add_argument("--system", help="a system prompt for every row")
    parser.add_argument("--temperature", type=_at_least_zero, help="sampling temperature")
    parser.add_argument(
        "--max-tokens", type=_count, help="the most tokens an answer may take (bounds the cost)"
    )
    parser.add_argument("--top-p", type=_positive_number, help="nucleus sampling: 0 to 1")
    parser.add_argument("--seed", type=int, help="a seed, for answers that repeat")
    parser.add_argument("--concurrency", type=_count, default=2, help="Ray actors (2)")
    parser.add_argument(
        "--max-in-flight", type=_count, default=16, help="requests in flight per actor (16)"
    )
    parser.add_argument(
        "--rpm", type=_positive_number, help="requests per minute for the whole job"
    )
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
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="send nothing: read and check the input, count its prompt tokens and bound the "
        'output by --max-tokens (exact counts need pip install "tir-llama[tokens]")',
    )
    parser.add_argument(
        "--input-price",
        type=_at_least_zero,
        metavar="PRICE",
        help="with --estimate: the price of a million input tokens, for the cost bound",
    )
    parser.add_argument(
        "--output-price",
        type=_at_least_zero,
        metavar="PRICE",
        help="with --estimate: the price of a million output tokens, for the cost bound",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Ray's own log lines and progress bars"
    )


def batch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a chat job over a table on Ray (`ray_tir`), imported only for this command."""
    if args.output is None and not args.estimate:
        print("error: batch needs an OUTPUT folder (or --estimate)", file=err)
        return EXIT_REFUSED
    if (args.input_price is not None or args.output_price is not None) and not args.estimate:
        print("error: --input-price and --output-price go with --estimate", file=err)
        return EXIT_REFUSED
    try:
        from tir_llama import _batch
    except ImportError as e:
        print(
            f'error: tir-llama batch needs Ray and pyarrow ({e}): pip install "tir-llama[ray]"',
            file=err,
        )
        return EXIT_REFUSED
    config = _connection(args)
    if args.model:
        config["model"] = args.model
    if args.estimate:
        return _batch.estimate(args, config, out, err)
    return _batch.run(args, config, out, err)


EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
_EXIT_STATUSES = (
    "exit status: 0 done; 1 a request or the job failed; 2 refused before any request (a "
    "missing or bad setting, flag or input); batch also: 3 done, some rows carry an error "
    "(--resume sends them again); 4 stopped early on an error every row would hit. "
    "Ctrl-C leaves with 130."
)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (to stderr, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        """Say what is wrong in one line and where the help is; exit with status 2."""
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _global_flags(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """The flags every command takes, before or after the command's name.

    On a subcommand their default is "not given", so that one given before the command's name
    is not put back to its default by the subcommand.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if sub else value

    group = parser.add_argument_group("connection (before or after the command)")
    group.add_argument(
        "--project-id", default=default(None), help="TIR project id (default: TIR_PROJECT_ID)"
    )
    group.add_argument(
        "--model", default=default(None), help=f"model API name (default: {DEFAULT_MODEL})"
    )
    group.add_argument(
        "--host", default=default(None), help="inference host (default: TIR_HOST, else TIR's)"
    )
    group.add_argument(
        "--endpoint-id", default=default(None), help="a self-deployed TIR model endpoint's id"
    )
    group.add_argument(
        "--base-url",
        default=default(None),
        help="a full .../v1 URL, in place of host, project and model (default: TIR_BASE_URL)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_number,
        default=default(None),
        metavar="SECONDS",
        help="seconds to wait for a reply, and between two streamed chunks (60)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=default(False),
        help="allow plain http:// to a host other than this machine (the key travels in clear)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the traceback of a failure",
    )


def _version() -> str:
    try:
        return version("tir-llama")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    """The `tir-llama` command line's parser."""
    top = _Parser(
        prog="tir-llama",
        description="Check a TIR configuration (doctor), chat in the terminal (chat), or "
        "answer every row of a table on Ray (batch).",
        epilog=_EXIT_STATUSES,
    )
    top.add_argument("--version", action="version", version=f"tir-llama {_version()}")
    _global_flags(top, sub=False)
    sub = top.add_subparsers(dest="command", required=True, metavar="{doctor,chat,batch}")
    doctor_parser = sub.add_parser(
        "doctor",
        help="check the configuration and the endpoint",
        description="Check the configuration, send a one-token request, probe native tools "
        "and the served context window; one small request to TIR_EMBEDDING_MODEL and "
        "TIR_RERANK_MODEL when they are set.",
        epilog=_EXIT_STATUSES,
    )
    doctor_parser.add_argument(
        "--context-window",
        type=_positive_int,
        help="the context_window you set on ChatTIRLlama / TIRLlamaLLM, to check against the "
        "endpoint's (default: the model's known window)",
    )
    _global_flags(doctor_parser, sub=True)
    chat_parser = sub.add_parser(
        "chat",
        help="a streaming chat in the terminal",
        description="A streaming chat. At a terminal: line editing and history, Ctrl-C stops "
        "an answer, Ctrl-D or Ctrl-C twice leaves. From a pipe: one turn per line; answers "
        "on stdout, usage on stderr.",
        epilog=_EXIT_STATUSES,
    )
    chat_parser.add_argument("--system", help="a system prompt")
    chat_parser.add_argument(
        "--max-tokens", type=_count, default=512, help="the most tokens an answer may take (512)"
    )
    _global_flags(chat_parser, sub=True)
    batch_parser = sub.add_parser(
        "batch",
        help="answer every row of a CSV, JSON Lines or Parquet table on Ray "
        '(pip install "tir-llama[ray]")',
        description="Answer every row of a table on Ray Data; bad input is refused in one "
        "line before Ray starts. --estimate counts the tokens and bounds the cost, sending "
        "nothing.",
        epilog=_EXIT_STATUSES,
    )
    _batch_arguments(batch_parser)
    _global_flags(batch_parser, sub=True)
    return top


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the `tir-llama` command line.

    Args:
        argv: the arguments (default: the process's).
        out: where results go (default: stdout).
        err: where errors, progress and prompts go (default: stderr; `out` when only `out`
            is given, so that a caller capturing one stream sees everything).
    """
    err = err or out or sys.stderr
    out = out or sys.stdout
    args = parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return doctor(args, out, err)
        if args.command == "batch":
            return batch(args, out, err)
        return chat(args, out, err, sys.stdin)
    except ConfigurationError as e:
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(file=err)
        return 130
    except Exception as e:
        if args.debug:
            raise
        # One line, not a screen of Ray and pyarrow frames; the frames are one flag away.
        print(
            f"error: {type(e).__name__}: {_one_line(e)[:500]} (run again with --debug for the "
            "traceback)",
            file=err,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
