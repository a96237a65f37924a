"""The parity suite: each scenario run with the peer and with ours on the same emulator."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "better_than_peer(why): the peer is wrong here; the test asserts what it does and "
        "that ours does better (docs/migrating.md names each)",
    )
