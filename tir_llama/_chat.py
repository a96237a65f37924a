"""`tir-llama chat`: a streaming chat, at a terminal (line editing, Ctrl-C) or from a pipe."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import termios
from collections.abc import Iterator
from typing import Any, TextIO

from tir_transport import (
    AuthenticationError,
    ChatClient,
    NotFoundError,
    PermissionDeniedError,
    TIRError,
    track_usage,
)
from tir_transport.adapter import build_payload

from ._common import EXIT_FAILED, EXIT_OK, _config, _one_line


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


def chat(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """A streaming chat: answers on `out`; the banner, prompts and usage on `err`.

    At a terminal: line editing and history, Ctrl-C stops an answer (the conversation goes on
    without it), Ctrl-D or a second Ctrl-C leaves, a failed turn is one line. From a pipe: a
    turn per line until the end of the input; exit status 1 if any turn failed, 130 when
    Ctrl-C stopped it. Either way an error every later turn would get too (a refused key, a
    model or project that is not there) ends the chat, with status 1.
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
                if terminal is None:
                    raise  # from a pipe nobody is there to go on with: Ctrl-C stops it (130)
                if interrupted:
                    break
                interrupted = True
                print("(Ctrl-C again or Ctrl-D leaves)", file=err)
                continue
            interrupted = False
            text = line.strip()
            if not text:
                continue
            try:
                text.encode()
            except UnicodeEncodeError:
                # Bytes that are not UTF-8 (a Latin-1 file piped in): that turn fails, said
                # in one line; the others go on.
                failed = True
                print(
                    "error: a line that is not UTF-8 text was not sent (convert the input, "
                    "for example: iconv -f latin1 -t utf-8)",
                    file=err,
                    flush=True,
                )
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
                if terminal is None:
                    raise
                print("[stopped: the conversation goes on without this turn]", file=err)
                continue
            except TIRError as e:
                history.pop()
                failed = True
                if shown:
                    print(file=out, flush=True)
                print(f"error: {_one_line(e)}", file=err, flush=True)
                if isinstance(e, _EVERY_TURN):
                    # The next turns would be refused the same way (and a pipe would send
                    # every line of its input to hear it).
                    print(
                        "(stopped: every turn would get this error; tir-llama doctor "
                        "checks the settings)",
                        file=err,
                    )
                    return EXIT_FAILED
                continue
            history.append({"role": "assistant", "content": "".join(shown)})
            print(file=out, flush=True)
            print(f"[{tokens}]", file=err, flush=True)
    return EXIT_FAILED if failed and terminal is None else EXIT_OK


# Errors no later turn can escape: the key, the project, the model.
_EVERY_TURN = (AuthenticationError, PermissionDeniedError, NotFoundError)


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
