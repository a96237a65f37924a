"""Fixtures of the vLLM tier: a real vLLM on loopback, started by scripts/vllm_server.py.

Three servers, each started once, ahead of need, in the background: `vllm_chat` (SmolLM2-135M
served as `llama3_1_8b_instruct`, with vLLM's `llama3_json` tool parser), `vllm_chat_notools`
(the same without tool parsing) and `vllm_embed` (multilingual-e5-small, embeddings, rerank,
score). The two chat servers never run together (the one a test does not need is stopped
first) and the tier's tests run last, grouped so that each server starts once: chat, then
chat with embeddings, then embeddings, then the server without tool parsing. The chat
server starts while the rest of the suite runs, and each next server while the current one
serves; a server no later test needs is stopped. At most two run at once, within 10 GB.

Where vLLM cannot be installed (no CPU build of torch for pip to find, another platform) the
tier is skipped with what is missing; with TIR_LLAMA_REQUIRE_VLLM=1 (CI) it fails instead.
TIR_LLAMA_VLLM_CHAT / _CHAT_NOTOOLS / _EMBED, set to a base URL (`http://127.0.0.1:N/v1`),
use a server already running (`scripts/vllm-server run chat`) instead of starting one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import vllm_server  # noqa: E402

REQUIRE_ENV = vllm_server.REQUIRE_ENV
# How long a test of this tier may take, its server's start included: a guard against a hang
# (the start has its own 600 s bound), not a measurement.
TIER_TIMEOUT = 900
_FIXTURES = {"vllm_chat": "chat", "vllm_chat_notools": "chat-notools", "vllm_embed": "embed"}
_URL_ENV = {
    "chat": "TIR_LLAMA_VLLM_CHAT",
    "chat-notools": "TIR_LLAMA_VLLM_CHAT_NOTOOLS",
    "embed": "TIR_LLAMA_VLLM_EMBED",
}


@dataclass(frozen=True)
class Engine:
    """A running vLLM server, as the tests see it."""

    kind: str
    base_url: str
    model: str

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/v1")


class Servers:
    """Starts each server once, in the background ahead of need; one chat server at a time.

    A server is started before its first test when an earlier test is still running (the
    chat server while the rest of the suite runs; the next server while the tier's current
    one serves), so that about a minute of start-up per server overlaps with tests.
    """

    def __init__(self) -> None:
        self._running: dict[str, Future[vllm_server.Server]] = {}
        self._unavailable: str | None = None
        # One long-lived thread starts every server: a server's parent-death signal
        # (local_model_server.tie_to_parent) fires when the thread that started it ends.
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-starter")

    def get(self, kind: str) -> Engine:
        model = vllm_server.EMBED_MODEL if kind == "embed" else vllm_server.CHAT_MODEL
        given = os.environ.get(_URL_ENV[kind])
        if given:
            return Engine(kind, given.rstrip("/"), model)
        if kind not in self._running:
            self._check()
            self._begin(kind)
        return Engine(kind, self._running[kind].result().base_url, model)

    def prepare(self, later: list[str]) -> None:
        """Start the first server that later tests need and that is not running, if allowed.

        `later`: the kinds the remaining tests need, in the order they need them. A chat
        server is not started while the other one runs (memory: both servers at most).
        """
        if not self._available():
            return
        for kind in later:
            if os.environ.get(_URL_ENV[kind]) or kind in self._running:
                continue
            if kind.startswith("chat") and any(k.startswith("chat") for k in self._running):
                return
            self._begin(kind)
            return

    def release_except(self, needed: set[str]) -> None:
        """Stop the servers no remaining test of the session needs."""
        for kind in [k for k in self._running if k not in needed]:
            self._stop(kind)

    def _begin(self, kind: str) -> None:
        if kind.startswith("chat"):
            for other in [k for k in self._running if k != kind and k.startswith("chat")]:
                self._stop(other)
        self._running[kind] = self._starter.submit(vllm_server.start, kind)

    def _stop(self, kind: str) -> None:
        try:
            server = self._running.pop(kind).result()
        except Exception:  # its start failed: nothing to stop, and get() said why
            return
        vllm_server.stop(server)

    def _available(self) -> bool:
        if self._unavailable is None:
            try:
                vllm_server.check()
                self._unavailable = ""
            except vllm_server.Unavailable as e:
                self._unavailable = str(e)
        return not self._unavailable

    def _check(self) -> None:
        if not self._available():
            if os.environ.get(REQUIRE_ENV) == "1":
                pytest.fail(f"vLLM is required here ({REQUIRE_ENV}=1): {self._unavailable}")
            pytest.skip(f"vLLM tier: {self._unavailable}")

    def stop_all(self) -> None:
        self.release_except(set())


_servers = Servers()


@pytest.fixture(scope="session")
def _vllm_servers() -> Iterator[Servers]:
    try:
        yield _servers
    finally:
        _servers.stop_all()


@pytest.fixture
def vllm_chat(_vllm_servers: Servers) -> Engine:
    """vLLM serving SmolLM2-135M as `llama3_1_8b_instruct`, with tool parsing."""
    return _vllm_servers.get("chat")


@pytest.fixture
def vllm_chat_notools(_vllm_servers: Servers) -> Engine:
    """The same model without `--enable-auto-tool-choice` (tools are a 400 there)."""
    return _vllm_servers.get("chat-notools")


@pytest.fixture
def vllm_embed(_vllm_servers: Servers) -> Engine:
    """vLLM serving multilingual-e5-small (pooling): embeddings, rerank, score."""
    return _vllm_servers.get("embed")


def _kinds(item: pytest.Item) -> set[str]:
    names = getattr(item, "fixturenames", ())
    return {kind for name, kind in _FIXTURES.items() if name in names}


def _group(item: pytest.Item) -> int:
    kinds = _kinds(item)
    if "chat-notools" in kinds:
        return 3
    if kinds == {"chat", "embed"}:
        return 1
    if kinds == {"embed"}:
        return 2
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The tier last, grouped so that each server starts once; the rest keeps its order.
    tier = [item for item in items if item.get_closest_marker("vllm") is not None]
    if not tier:
        return
    others = [item for item in items if item.get_closest_marker("vllm") is None]
    tier.sort(key=_group)  # stable: within a group, collection order
    items[:] = others + tier
    for item in tier:
        item.add_marker(pytest.mark.timeout(TIER_TIMEOUT))
    if not config.option.collectonly:
        _servers.prepare(_order(tier))


def _order(items: Sequence[pytest.Item]) -> list[str]:
    """The server kinds `items` need, in the order they first need them."""
    order: list[str] = []
    for item in items:
        for kind in sorted(_kinds(item)):  # "chat" before "embed" in the shared group
            if kind not in order:
                order.append(kind)
    return order


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Also when no test of the tier ran after all (a server started ahead of need).
    _servers.stop_all()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # Memory: a server no later test needs is stopped as soon as its last test is done.
    if item.get_closest_marker("vllm") is None:
        return
    session_items = item.session.items
    later = session_items[session_items.index(item) + 1 :] if nextitem is not None else []
    order = _order(later)
    _servers.release_except(set(order))
    _servers.prepare(order)
