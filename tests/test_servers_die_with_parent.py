"""The local servers that scripts/ start die with the process that started them.

They run in their own session (a Ctrl-C in the terminal goes to the program, which stops
them cleanly); without a parent-death signal, a `kill -9` of that program (the demo, pytest,
a CI timeout) left them running under PID 1, holding memory and a port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 30.0  # a guard against a hang, not a measurement

STARTER = """
import sys, time
sys.path.insert(0, {scripts!r})
import local_embedding_server
server = local_embedding_server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that nobody reaps still answers kill(0); it is gone all the same.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_killed_starter_takes_its_embedding_server_with_it() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER.format(scripts=str(ROOT / "scripts"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    try:
        assert alive(server_pid)
        starter.kill()  # SIGKILL: no finally, no atexit in the starter
        starter.wait(WAIT_SECONDS)
        deadline = time.monotonic() + WAIT_SECONDS
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server_pid), "the server outlived the process that started it"
    finally:
        if alive(server_pid):
            os.kill(server_pid, 9)


def test_run_says_when_its_server_dies_and_exits() -> None:
    # `run` used to sleep on at its prompt after its server had crashed or been killed.
    run = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "local_embedding_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stdout is not None
    line = run.stdout.readline()
    try:
        server_pid = int(line.split("(PID ")[1].split(")")[0])
        os.kill(server_pid, 9)
        assert run.wait(WAIT_SECONDS) == 1
        assert run.stderr is not None
        assert "stopped by itself (exit status -9)" in run.stderr.read()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
