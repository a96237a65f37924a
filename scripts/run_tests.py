"""`make pytest`: the vLLM tier beside everything else, as two pytest processes.

The vLLM tier (tests/vllm) spends its time starting servers and generating tokens, each
server kept to one CPU on a 2-CPU machine (scripts/vllm_server.py); the rest of the suite
mostly waits on sockets, Ray and subprocesses. In a fresh-clone `.ci/run` on this project's
2-CPU machine, one after the other took 18 min 08 s of pytest (20 min in all); side by side,
13 min 54 s to 15 min 17 s over four runs (15 min 06 s to 16 min 27 s in all), both CPUs
busy throughout.
After the vLLM tier, its process chain runs the packaging tests (`TAIL`), which the rest
would otherwise run last: on 2026-12-07, with the reliability tests run on both HTTP engines,
the rest took 17 min 22 s alone against the vLLM tier's 9 min.
The rest of the suite prints as it runs; the vLLM tier's output goes to a log (named at the
start) and is printed once it ends, so the two never interleave. The exit status is the first
failure's, else 0. Ctrl-C or a SIGTERM ends both runs, with their servers.

Usage: python scripts/run_tests.py [pytest arguments for both runs...]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    """Run both tiers; return the exit status `make` should see."""
    log = Path(tempfile.gettempdir()) / f"tir-llama-vllm-tier-{os.getpid()}.log"
    pytest = [sys.executable, "-m", "pytest", *argv]
    started = time.monotonic()
    with log.open("wb") as out:
        # A process group of its own, ended as one (its servers with it) on Ctrl-C or SIGTERM.
        vllm = subprocess.Popen(
            [sys.executable, __file__, "--tail", *argv],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"run_tests: the vLLM tier runs beside the rest; its output: {log}", flush=True)
    # In this script's process group: Ctrl-C reaches it as it reaches any pytest run.
    rest = subprocess.Popen(
        [*pytest, "-m", "not vllm", "--ignore=tests/vllm", f"--ignore={TAIL}"], cwd=ROOT
    )

    def end(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vllm.pid, signal.SIGTERM)  # its servers die with it (parent-death signal)
        if signum == signal.SIGTERM:
            rest.terminate()
        rest.wait()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGTERM, end)
    rest_code = rest.wait()
    rest_seconds = time.monotonic() - started
    vllm_code = vllm.wait()
    sys.stdout.write(log.read_text(errors="replace"))
    print(
        f"run_tests: everything but vLLM and {TAIL} exit {rest_code} in {rest_seconds:.0f} s; "
        f"the vLLM tier and {TAIL} exit {vllm_code}; {time.monotonic() - started:.0f} s in all",
        flush=True,
    )
    log.unlink()
    # pytest's 5 ("no tests ran") is not a failure of the vLLM run where it is skipped.
    return next((code for code in (rest_code, vllm_code) if code not in (0, 5)), 0)


def tail(argv: list[str]) -> int:
    """The vLLM tier, then the tests that follow it in the same process chain (`TAIL`).

    The vLLM tier ends minutes before the rest: the packaging tests (building the wheel and
    the sdist, fresh venvs of Python 3.12 and 3.13; about 2 minutes, and self-contained: no
    Ray, no shared server) run after it instead of in the rest's queue.
    """
    pytest = [sys.executable, "-m", "pytest", *argv, "-p", "no:cacheprovider"]
    vllm_code = subprocess.call([*pytest, "-m", "vllm", "tests/vllm"], cwd=ROOT)
    tail_code = subprocess.call([*pytest, "-m", "not vllm", TAIL], cwd=ROOT)
    # pytest's 5 ("no tests ran") is not a failure of the vLLM run where it is skipped.
    return next((code for code in (vllm_code, tail_code) if code not in (0, 5)), 0)


# Run after the vLLM tier, beside the rest (see `tail`).
TAIL = "tests/test_packaging.py"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tail"]:
        raise SystemExit(tail(sys.argv[2:]))
    raise SystemExit(main(sys.argv[1:]))
