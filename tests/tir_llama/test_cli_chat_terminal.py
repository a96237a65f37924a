"""`tir-llama chat` as a person meets it: in a real pseudo-terminal, and in a pipe.

The command runs as a subprocess against the emulator. At a terminal: readline's line editing
and history, Ctrl-C (typed: SIGINT from the terminal) stops an answer and keeps the
conversation, a second Ctrl-C or Ctrl-D leaves cleanly, a failed turn is one line, keys typed
during an answer are neither shown in it nor sent as the next prompt, and missing settings are
said before any banner. In a pipe: answers alone on stdout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tests.support.terminal import WAIT_SECONDS, Terminal

CTRL_C, CTRL_D, LEFT, UP = b"\x03", b"\x04", b"\x1b[D", b"\x1b[A"
# The emulator holds the stream this long after its first words: the answer is still coming
# when the test types into it (the test never waits for it: Ctrl-C ends the turn first).
HOLD = 60.0


def command_env(emulator: Emulator, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}
    env.update(
        TIR_BASE_URL=emulator.base_url,
        TERM="xterm",
        HOME=str(home),
        INPUTRC=os.devnull,  # the machine's key bindings are not the test's
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def chat(emulator: Emulator, tmp_path: Path) -> Iterator[Terminal]:
    terminal = Terminal(
        [sys.executable, "-m", "tir_llama", "chat"],
        command_env(emulator, tmp_path, TIR_API_KEY=TEST_KEY),
    )
    yield terminal
    terminal.close()


def user_turns(emulator: Emulator, index: int) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in emulator.requests[index].json["messages"]]


def test_ctrl_c_stops_the_answer_and_keeps_the_conversation(
    emulator: Emulator, chat: Terminal
) -> None:
    emulator.queue(
        Reply(text="Hi there."),
        Reply(pieces=["Once upon ", "a time"], stall_after=2, stall_seconds=HOLD),
        Reply(text="Fine."),
    )
    chat.expect("> ")
    chat.type("hello\r")
    chat.expect("Hi there.")
    chat.expect("> ")
    chat.type("tell me a story\r")
    chat.expect("Once upon")
    # Typed while the answer streams: neither shown in it nor the next prompt.
    chat.type("junk typed meanwhile\r")
    chat.type(CTRL_C)
    chat.expect("[stopped")
    chat.expect("> ")
    chat.type("and now?\r")
    chat.expect("Fine.")
    chat.expect("> ")
    chat.type(CTRL_D)
    assert chat.wait() == 0
    assert "Traceback" not in chat.screen and "KeyboardInterrupt" not in chat.screen
    assert "junk" not in chat.screen
    assert len(emulator.requests) == 3
    # The stopped turn is left out; the turns before it stay.
    assert user_turns(emulator, 2) == [
        ("user", "hello"),
        ("assistant", "Hi there."),
        ("user", "and now?"),
    ]


def test_line_editing_and_history(emulator: Emulator, chat: Terminal) -> None:
    emulator.queue(Reply(text="One."), Reply(text="Two."))
    chat.expect("> ")
    chat.type(b"helo" + LEFT + b"l\r")  # Left arrow, then the missing letter
    chat.expect("One.")
    chat.expect("> ")
    chat.type(UP + b"\r")  # the line before, from the history
    chat.expect("Two.")
    chat.expect("> ")
    chat.type(CTRL_D)
    assert chat.wait() == 0
    assert emulator.requests[0].json["messages"][-1]["content"] == "hello"
    assert emulator.requests[1].json["messages"][-1]["content"] == "hello"
    assert "[D" not in chat.screen


def test_ctrl_d_leaves_with_a_newline(emulator: Emulator, chat: Terminal) -> None:
    chat.expect("> ")
    chat.type(CTRL_D)
    assert chat.wait() == 0
    assert chat.screen.endswith("> \n"), repr(chat.screen[-40:])
    assert emulator.requests == []


def ctrl_c_at_the_prompt(chat: Terminal, typed: str) -> None:
    chat.type(typed)
    chat.expect(typed)
    chat.wait_reading()  # see Terminal.wait_reading: a person is never that fast
    chat.type(CTRL_C)


def test_a_second_ctrl_c_leaves(emulator: Emulator, chat: Terminal) -> None:
    chat.expect("> ")
    ctrl_c_at_the_prompt(chat, "half a line")
    chat.expect("Ctrl-C again or Ctrl-D leaves")
    chat.expect("> ")
    ctrl_c_at_the_prompt(chat, "x")
    assert chat.wait() == 0
    assert chat.screen.endswith("\n") and "Traceback" not in chat.screen
    assert emulator.requests == []


def test_a_failed_turn_is_one_line_and_the_session_goes_on(
    emulator: Emulator, chat: Terminal
) -> None:
    emulator.queue(Reply(pieces=["Half ", "an answer"], cut_after=2), Reply(text="Whole."))
    chat.expect("> ")
    chat.type("first\r")
    failure = chat.expect("> ")
    errors = [line for line in failure.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, failure
    assert "Traceback" not in failure
    chat.type("second\r")
    chat.expect("Whole.")
    chat.expect("> ")
    chat.type(CTRL_D)
    assert chat.wait() == 0
    assert user_turns(emulator, 1) == [("user", "second")]


def test_missing_settings_are_said_before_any_banner(emulator: Emulator, tmp_path: Path) -> None:
    terminal = Terminal(
        [sys.executable, "-m", "tir_llama", "chat"], command_env(emulator, tmp_path)
    )
    try:
        # It ends by itself: nothing is typed.
        assert terminal.wait() == 2
    finally:
        terminal.close()
    assert "TIR_API_KEY" in terminal.screen
    assert "chatting with" not in terminal.screen and "> " not in terminal.screen


def test_piped_chat_keeps_answers_alone_on_stdout(emulator: Emulator, tmp_path: Path) -> None:
    emulator.queue(
        Reply(text="Hi there.", prompt_tokens=5, completion_tokens=3), Reply(text="Bye.")
    )
    result = subprocess.run(
        [sys.executable, "-m", "tir_llama", "chat"],
        input="hello\n\nbye now\n",
        capture_output=True,
        text=True,
        env=command_env(emulator, tmp_path, TIR_API_KEY=TEST_KEY),
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hi there.\nBye.\n"
    assert "[5 in, 3 out]" in result.stderr and "> " not in result.stderr
    assert "chatting with" not in result.stdout + result.stderr


def test_piped_chat_with_a_failed_turn_goes_on_and_exits_1(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.queue(Reply(status=400, message="bad turn"), Reply(text="Fine."))
    result = subprocess.run(
        [sys.executable, "-m", "tir_llama", "chat", "--timeout", "30"],
        input="one\ntwo\n",
        capture_output=True,
        text=True,
        env=command_env(emulator, tmp_path, TIR_API_KEY=TEST_KEY),
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == "Fine.\n"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad turn" in errors[0], result.stderr


def test_ctrl_c_stops_a_piped_chat(emulator: Emulator, tmp_path: Path) -> None:
    # Nobody is there to go on with the conversation: Ctrl-C (a SIGINT to the command) stops
    # it with 130, the rest of the input unsent. It used to drop that turn and go on.
    emulator.queue(
        Reply(text="Hi there."),
        Reply(pieces=["Once upon ", "a time"], stall_after=2, stall_seconds=HOLD),
    )
    command = subprocess.Popen(
        [sys.executable, "-m", "tir_llama", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=command_env(emulator, tmp_path, TIR_API_KEY=TEST_KEY),
    )
    assert command.stdin is not None and command.stdout is not None
    command.stdin.write(b"hello\ntell me a story\nand then?\nand then?\n")
    command.stdin.close()
    assert command.stdout.readline() == b"Hi there.\n"
    deadline = time.monotonic() + WAIT_SECONDS
    while len(emulator.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the second answer's first words are out
    command.send_signal(signal.SIGINT)
    try:
        command.wait(timeout=WAIT_SECONDS)
    finally:
        command.kill()
    assert command.stderr is not None
    out, err = command.stdout.read(), command.stderr.read()
    assert command.returncode == 130, err
    assert b"Traceback" not in err
    assert out.startswith(b"Once upon ")
    assert len(emulator.requests) == 2


@pytest.mark.parametrize("piped", [True, False], ids=["piped", "terminal"])
def test_a_refused_key_ends_the_chat(emulator: Emulator, tmp_path: Path, piped: bool) -> None:
    # Every later turn would be refused too: a pipe would send each line of its input to
    # hear it, a person would type on for nothing.
    emulator.require_key = TEST_KEY
    env = command_env(emulator, tmp_path, TIR_API_KEY="sk-not-the-key-7f3a")
    if piped:
        result = subprocess.run(
            [sys.executable, "-m", "tir_llama", "chat"],
            input="one\ntwo\nthree\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=WAIT_SECONDS,
            check=False,
        )
        assert result.returncode == 1
        screen = result.stderr
    else:
        terminal = Terminal([sys.executable, "-m", "tir_llama", "chat"], env)
        try:
            terminal.expect("> ")
            terminal.type("one\r")
            assert terminal.wait() == 1
        finally:
            terminal.close()
        screen = terminal.screen
    assert len(emulator.requests) == 1
    assert "every turn would get this error" in screen and "Traceback" not in screen
    assert "sk-not-the-key-7f3a" not in screen


def test_a_line_that_is_not_utf8_fails_alone(emulator: Emulator, tmp_path: Path) -> None:
    # A Latin-1 file piped in: that line is one failed turn; it ended the chat with a
    # UnicodeEncodeError, and the lines after it were never sent.
    emulator.queue(Reply(text="One."), Reply(text="Three."))
    result = subprocess.run(
        [sys.executable, "-m", "tir_llama", "chat"],
        input=b"first line\ncaf\xe9 au lait\nthird line\n",
        capture_output=True,
        env=command_env(emulator, tmp_path, TIR_API_KEY=TEST_KEY),
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == b"One.\nThree.\n"
    errors = [line for line in result.stderr.splitlines() if line.startswith(b"error:")]
    assert len(errors) == 1 and b"not UTF-8" in errors[0], result.stderr
    assert [m["content"] for m in emulator.requests[1].json["messages"]][-1] == "third line"
