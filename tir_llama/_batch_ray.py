"""`batch`'s Ray: started quietly, its processes reaped after the command, its errors unwrapped."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator

import ray
import ray.data

# Run by a small process of its own when this command starts Ray: once the command has
# ended, however it ended (a kill -9 included: its end of the pipe closes), every process
# that carries this job's mark (Ray's, which inherit it) is ended, and every process those
# started. raylet starts its dashboard and runtime-env agents with an environment of its own
# making, without the mark, and Ray kills raylet with its parent (a parent-death signal), so
# by the time the command is gone the agents may already hang under PID 1, out of view; left
# to themselves they outlived a killed command by 20 s and more on a busy machine. So the
# reaper watches the tree while the command runs (a look every half second, a few hundred
# small reads) and remembers every descendant it saw, with its start time, so that a PID
# reused by an unrelated process later is never touched.
_REAPER = """
import os, select, signal, sys
mark = b"TIR_LLAMA_BATCH=" + sys.argv[1].encode()
me = os.getpid()
seen = {}
def look():
    parents, started, doomed = {}, {}, set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parents[int(pid)], started[int(pid)] = int(fields[1]), fields[19]
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in f.read().split(b"\\0"):
                    doomed.add(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    grown = True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in doomed and pid not in doomed:
                doomed.add(pid)
                grown = True
    for pid in doomed:
        seen[pid] = started[pid]
    return started
while not (select.select([0], [], [], 0.5)[0] and not os.read(0, 4096)):
    look()
for _ in range(3):
    started = look()
    for pid, start in seen.items():
        if started.get(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
"""
_reaper: subprocess.Popen[bytes] | None = None


def _start_ray(verbose: bool) -> None:
    global _reaper
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and os.path.isdir("/proc"):
        mark = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != "TIR_LLAMA_BATCH"}
        _reaper = subprocess.Popen(  # noqa: S603 (our own interpreter and code)
            [sys.executable, "-c", _REAPER, mark], stdin=subprocess.PIPE, env=env
        )
        os.environ["TIR_LLAMA_BATCH"] = mark  # inherited by every process Ray starts
    if not verbose:
        _quiet_ray()
    # RAY_ADDRESS names a cluster; without it, a local Ray instance is started (without a
    # dashboard: nobody looks at one for the length of a command).
    try:
        with contextlib.nullcontext() if verbose else _stderr_held():
            ray.init(
                address=address,
                log_to_driver=verbose,
                include_dashboard=False,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
    finally:
        # Ray's processes have inherited the mark; a process the caller starts later (batch
        # run inside a program of theirs) must not carry it, or the reaper would end it.
        os.environ.pop("TIR_LLAMA_BATCH", None)


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Keep what Ray's C++ side writes to stderr while it starts; said only if starting fails.

    (Its core worker announces the log level it was given, whatever that level is.)
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace")[-3000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_ray() -> None:
    """Ray's own log lines, warnings and block progress bars off: the command says its own."""
    # Read by Ray's C++ core worker when it starts (its "E ... core_worker.cc" lines).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")


def _cause(error: BaseException) -> BaseException:
    """The exception Ray's wrappers (RayTaskError, UserCodeException) were raised for."""
    while True:
        inner = getattr(error, "cause", None) or (
            error.__cause__ if "ray" in type(error).__module__ else None
        )
        if not isinstance(inner, BaseException) or inner is error:
            return error
        error = inner
