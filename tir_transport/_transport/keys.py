"""The API keys in use, hidden in the HTTP libraries' own log records.

At DEBUG, httpcore logs each reply's headers, and a gateway may echo the Authorization value
in one. Every transport holds its key here while it lives (`hold_key`); a filter on those
loggers replaces every form of every key in use. The filter runs only for records a logger
lets through.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import weakref
from collections import deque
from collections.abc import Iterator

from .._secrets import HIDDEN, key_hider

__all__ = ["hold_key", "keys_in_use"]

_KEYS_IN_USE: dict[str, int] = {}  # key -> holders (a key leaves with its last)
# Re-entrant: the collector may run inside a block that holds the lock (any allocation can
# start it), and a finalizer it runs may log (an httpx client closing its pool logs at
# DEBUG), which comes back here through the filter on the same thread. With a plain Lock
# that deadlocked a test run. A re-entered holder (`_keys_busy`) changes nothing.
_KEYS_LOCK = threading.RLock()
_keys_busy = False
_keys_pattern: re.Pattern[str] | None = None  # every form of every key in use, or None
# Keys whose holder was collected: the collector only appends here, and the lock's
# holders drain it.
_released: deque[str] = deque()


def hold_key(owner: object, key: str) -> None:
    """Hide `key` in httpx's and httpcore's log records while `owner` lives."""
    global _keys_pattern
    if not key_hider(key).forms:
        return  # no key, or one too short to be one
    with _keys_held():
        _KEYS_IN_USE[key] = _KEYS_IN_USE.get(key, 0) + 1
        _keys_pattern = None
    weakref.finalize(owner, _released.append, key)


@contextlib.contextmanager
def _keys_held() -> Iterator[bool]:
    """Hold the keys' lock; yields whether this thread already held it.

    The outermost holder first drains the keys of collected holders; a re-entered one
    (`_keys_busy`) does not, so that the block it interrupted finds the state it left.
    """
    global _keys_busy
    with _KEYS_LOCK:
        busy, _keys_busy = _keys_busy, True
        try:
            if not busy:
                _drain_released()
            yield busy
        finally:
            _keys_busy = busy


def _drain_released() -> None:
    global _keys_pattern
    while _released:
        key = _released.popleft()
        left = _KEYS_IN_USE.get(key, 0) - 1
        if left > 0:
            _KEYS_IN_USE[key] = left
        else:
            _KEYS_IN_USE.pop(key, None)
        _keys_pattern = None


def keys_in_use() -> frozenset[str]:
    """The keys whose log records are hidden now (those of the transports alive)."""
    with _keys_held():
        return frozenset(_KEYS_IN_USE)


def _compile(keys: list[str]) -> re.Pattern[str] | None:
    forms = {form for key in keys for form in key_hider(key).forms}
    # Longest first: a form inside a longer one must not leave the rest of it.
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _pattern() -> re.Pattern[str] | None:
    global _keys_pattern
    with _keys_held() as reentered:
        if reentered:
            # A finalizer that logs, run by the collector inside a holder's block: the keys
            # as they are, read, not changed.
            return _keys_pattern or _compile(list(_KEYS_IN_USE))
        if _keys_pattern is None and _KEYS_IN_USE:
            _keys_pattern = _compile(list(_KEYS_IN_USE))
        return _keys_pattern


class _HideKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        pattern = _pattern() if _KEYS_IN_USE else None
        if pattern is not None:
            text = record.getMessage()
            shown = pattern.sub(HIDDEN, text)
            if shown != text:
                record.msg, record.args = shown, None
            if record.exc_info and record.exc_info[1] is not None:
                # A traceback logged with the record (urllib3's header-parsing warning
                # quotes the raw header lines): its text, keys hidden, in place of the
                # exception, which a handler would otherwise format, or send, whole.
                trace = record.exc_text or _FORMATTER.formatException(record.exc_info)
                hidden = pattern.sub(HIDDEN, trace)
                if hidden != trace:
                    record.exc_text, record.exc_info = hidden, None
        return True


_FORMATTER = logging.Formatter()


_HIDE_KEYS = _HideKeys()
for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "aiohttp.client",
    "aiohttp.internal",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
):
    logging.getLogger(_name).addFilter(_HIDE_KEYS)
