"""The `tir-llama` command line's parser: its commands, flags and their checks (no Ray needed)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn, TypeVar

from tir_transport import DEFAULT_MODEL

from ._common import EXIT_REFUSED

_N = TypeVar("_N", int, float)


def _parsed(text: str, cast: Callable[[str], _N], kind: str) -> _N:
    """A flag's value read with `cast`, or argparse's error that says it is not `kind`."""
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {kind}: {text}") from None


def _positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of tokens, got {text}")
    return value


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
