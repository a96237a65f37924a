"""A command run in a real pseudo-terminal, as a person at a terminal runs it.

The pty is the command's controlling terminal and the command its foreground process group,
so Ctrl-C typed here (b"\\x03") reaches it as SIGINT from the terminal, Ctrl-D (b"\\x04") is
end of input, and readline, echo and `tcflush` behave as they do for a person.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence

# A guard against a hang, never a measurement: the command normally answers in milliseconds.
WAIT_SECONDS = 60.0
# Escape sequences (colours, cursor moves, bracketed paste) and carriage returns: what a person
# sees is the text between them.
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>]|\r")


class Terminal:
    """One command on a pty of 24 x 120; `expect` waits for text on its screen."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.master = master
        self.raw = b""
        self.seen = 0  # where the next `expect` starts looking

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)

    @property
    def screen(self) -> str:
        """Everything shown so far, without escape sequences and carriage returns."""
        return _ESCAPES.sub(b"", self.raw).decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every end of the pty's other side is closed
            return False
        if not data:
            return False
        self.raw += data
        return True

    def expect(self, text: str) -> str:
        """Wait until `text` shows after what earlier calls matched; return the screen up to it."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            screen = self.screen
            at = screen.find(text, self.seen)
            if at >= 0:
                start, self.seen = self.seen, at + len(text)
                return screen[start : self.seen]
            if time.monotonic() > deadline or not self._read(0.2):
                if text in self.screen[self.seen :]:
                    continue
                raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen}")

    def wait_reading(self) -> None:
        """Wait until the command is blocked waiting for a key (select, pselect6 or poll).

        A SIGINT that lands while readline is between two reads waits for the next key
        (CPython's readline checks signals only when its wait for a key is interrupted); a
        person never types that fast, a test does.
        """
        waiting_for_input = {"7", "23", "270", "271"}  # poll, select, pselect6, ppoll (x86-64)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                with open(f"/proc/{self.process.pid}/syscall") as f:
                    call = f.read().split()
            except OSError:
                call = []
            if call and call[0] in waiting_for_input:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the command never waited for a key: {call}")
            time.sleep(0.01)

    def type(self, keys: bytes | str) -> None:
        """Type `keys` (bytes as they are: b"\\x03" is Ctrl-C, b"\\x1b[D" the Left arrow)."""
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    def wait(self) -> int:
        """Wait for the command to end (reading its last output); return its exit status."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self._read(0.2):
            ended = self.process.poll() is not None
            if ended and not select.select([self.master], [], [], 0)[0]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not end; the screen:\n{self.screen}")
        return self.process.wait(timeout=WAIT_SECONDS)

    def close(self) -> None:
        """End the command if it still runs, and close the pty."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)
