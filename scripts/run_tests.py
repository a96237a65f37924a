"""`make pytest`: the vLLM tier beside everything else, as two pytest processes.

The vLLM tier (tests/vllm) spends its time starting servers and generating tokens, each
server kept to one CPU on a 2-CPU machine (scripts/vllm_server.py); the rest of the suite
mostly waits on sockets, Ray and subprocesses. In a fresh-clone `.ci/run` on this project's
2-CPU machine, one after the other took 18 min 08 s of pytest (20 min in all); side by side,
13 min 54 s to 15 min 17 s over four runs (15 min 06 s to 16 min 27 s in all), both CPUs
busy throughout.
The vLLM tier ends first (8 min 30 s of a 15 min 47 s run on 2026-12-07, before this split):
its process chain then runs `TAIL`, the modules that start no Ray and share nothing with the
rest (the packaging tests, the core's, the adapters', the parity suite, the command line's
own), while the rest runs Ray's and the end-to-end ones. With the split, a fresh-clone
`.ci/run` took 13 min 30 s of pytest (14 min 35 s in all): the rest 13 min 25 s, the vLLM
tier 8 min 31 s and `TAIL` 4 min 18 s after it. Two sessions must not both start a
local Ray: `ray.init()` joins an instance it finds, and `tir-llama batch` would see two.
The rest of the suite prints as it runs; the vLLM chain's output goes to a log (named at the
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
    ignored = [f"--ignore={path}" for path in ("tests/vllm", *TAIL)]
    rest = subprocess.Popen([*pytest, "-m", "not vllm", *ignored], cwd=ROOT)

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
        f"run_tests: the rest exit {rest_code} in {rest_seconds:.0f} s; the vLLM tier and "
        f"what follows it exit {vllm_code}; {time.monotonic() - started:.0f} s in all",
        flush=True,
    )
    log.unlink()
    # pytest's 5 ("no tests ran") is not a failure of the vLLM run where it is skipped.
    return next((code for code in (rest_code, vllm_code) if code not in (0, 5)), 0)


def tail(argv: list[str]) -> int:
    """The vLLM tier, then the tests that follow it in the same process chain (`TAIL`)."""
    pytest = [sys.executable, "-m", "pytest", *argv, "-p", "no:cacheprovider"]
    vllm_code = subprocess.call([*pytest, "-m", "vllm", "tests/vllm"], cwd=ROOT)
    # An address where no Ray listens: a test here that started or joined Ray fails, rather
    # than sharing the rest's instance.
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    tail_code = subprocess.call([*pytest, "-m", "not vllm", *TAIL], cwd=ROOT, env=env)
    # pytest's 5 ("no tests ran") is not a failure of the vLLM run where it is skipped.
    return next((code for code in (vllm_code, tail_code) if code not in (0, 5)), 0)


# Run after the vLLM tier, beside the rest: none starts Ray (see the module's docstring).
# About 4 minutes alone on 2 CPUs: the packaging tests 2 (the wheel and the sdist built,
# fresh venvs of Python 3.12 and 3.13), the others 2.
TAIL = (
    "tests/test_packaging.py",
    "tests/tir_transport",
    "tests/langchain_tir",
    "tests/llama_index_tir",
    "tests/parity",
    "tests/tir_llama",
    "tests/test_every_adapter.py",
)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tail"]:
        raise SystemExit(tail(sys.argv[2:]))
    raise SystemExit(main(sys.argv[1:]))
