"""The API key kept where it belongs: hidden in what we show, refused where it would leak.

A gateway may echo the Authorization header back in its error page, its JSON or a header;
errors, logs and reprs hide the key before anything quotes or cuts it. A request field named
like a secret, or holding the key, is refused: the key goes in the Authorization header only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any
from urllib.parse import quote as url_quote

__all__ = [
    "HIDDEN",
    "MIN_SECRET_CHARS",
    "KeyHider",
    "key_hider",
    "looks_secret",
    "refuse_secrets",
    "scrub_bytes",
    "scrub_secret",
]


# Shorter than this, a "key" is no real token (TIR's are long JWTs), and replacing each of its
# occurrences would mangle the text: a key "k" turns "tokens" into "to**********ens".
MIN_SECRET_CHARS = 8


HIDDEN = "**********"


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")


class KeyHider:
    """Hides one API key in texts and raw replies, in every form a reply may echo it in.

    The forms: as sent, escaped in JSON, percent-encoded. A key shorter than
    `MIN_SECRET_CHARS` is no real token and is left alone (hiding "k" would mangle text).
    """

    __slots__ = ("_forms", "_probe", "_raw_forms", "_raw_probe", "forms")

    def __init__(self, secret: str | None) -> None:
        forms: set[str] = set()
        probe = ""
        if secret and len(secret) >= MIN_SECRET_CHARS:
            escaped = json.dumps(secret)[1:-1]
            forms = {secret, escaped, escaped.replace("/", "\\/"), url_quote(secret, safe="")}
            # The key's longest start that no form escapes: the common case (a text without
            # the key) is then one substring test.
            start = _UNRESERVED.match(secret)
            probe = start.group() if start and len(start.group()) >= 4 else ""
        # Longest first: a shorter form inside a longer one must not leave the rest of it.
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        self.forms = self._forms  # the forms looked for (none: no key worth hiding)
        self._raw_forms = tuple(f.encode() for f in self._forms)
        self._probe = probe
        self._raw_probe = probe.encode()

    def text(self, text: str) -> str:
        """`text` with the key hidden."""
        if not self._forms or (self._probe and self._probe not in text):
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, HIDDEN)
        return text

    def raw(self, content: bytes) -> bytes:
        """`content` (a reply's bytes) with the key hidden, before anything decodes it."""
        if not self._forms or (self._raw_probe and self._raw_probe not in content):
            return content
        for form in self._raw_forms:
            if form in content:
                content = content.replace(form, HIDDEN.encode())
        return content


@functools.lru_cache(maxsize=1024)
def key_hider(secret: str | None) -> KeyHider:
    """The `KeyHider` of a key, made once per key (a stream's parser asks for it each time)."""
    return KeyHider(secret)


def scrub_secret(text: str, secret: str | None) -> str:
    """`text` with every occurrence of the API key hidden (a key long enough to be one).

    A gateway may echo the Authorization header back in its error page, its JSON or a
    header; the key is looked for as sent, JSON-escaped and percent-encoded. Hide before
    cutting: a key cut in half is no longer found.
    """
    return key_hider(secret).text(text)


def holds_secret(exc: BaseException, secret: str | None) -> bool:
    """Whether the key shows anywhere a traceback or an error reporter could show of `exc`.

    Its text, repr and args, and those of every exception it was raised from or during
    (`__cause__`, `__context__`): an HTTP library's error may carry the request's headers,
    or a reply's bytes that echoed them.
    """
    hider = key_hider(secret)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        shown = f"{current}{current!r}{current.args!r}"
        if hider.text(shown) != shown:
            return True
        current = current.__cause__ or current.__context__
    return False


def scrub_bytes(content: bytes, secret: str | None) -> bytes:
    """`scrub_secret` for a raw reply, before anything decodes, parses or quotes it."""
    return key_hider(secret).raw(content)


# Words that name a secret when they end an argument's name (`hf_token`, `private_key`,
# `x-api-key`), or anywhere in it (`client_secret_id`). `max_tokens` ends in "tokens",
# `stop_token_ids` in "ids": request fields, not secrets.
_SECRET_LAST_WORDS = frozenset({"key", "token", "auth", "cookie"})
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "authorization",
        "bearer",
        "credential",
        "credentials",
    }
)
# Request fields of OpenAI's API whose names end like a secret's but are none.
_NOT_SECRETS = frozenset({"prompt_cache_key"})


@functools.lru_cache(maxsize=1024)
def looks_secret(name: str) -> bool:
    """Whether an argument or request field named `name` would hold a secret.

    True for names like `api_key`, `openai_api_key`, `hf_token`, `access_token`, `x-api-key`,
    `apiKey`, `client_secret`, `password`, `Authorization`; false for `max_tokens`,
    `stop_token_ids`, `top_k`, `prompt_cache_key`.
    """
    if name in _NOT_SECRETS:
        return False
    # camelCase into words too: `apiKey`, `accessToken`.
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS or any(w in _SECRET_WORDS for w in words):
        return True
    return any(a == "api" and b in ("key", "keys", "token") for a, b in pairwise(words))


def _holds(value: Any, secret: str) -> bool:
    """Whether `value` (a str, or a dict / list of them, at any depth) holds `secret`."""
    if isinstance(value, str):
        # A short key (a test's "k") would match ordinary text: then only the whole value.
        return value.strip() == secret or (len(secret) >= 8 and secret in value)
    if isinstance(value, Mapping):
        return any(_holds(v, secret) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds(v, secret) for v in value)
    return False


def refuse_secrets(
    fields: Mapping[str, Any], secret: str | None = None, where: str = "request field"
) -> None:
    """Refuse request fields named like a secret, or holding the API key (`secret`).

    The message names the field and never quotes its value.

    Args:
        fields: the request fields (a payload without its messages, model_kwargs, ...).
        secret: the API key, when known.
        where: what the fields are, for the message.

    Raises:
        ValueError: a field looks like a secret or holds the key.
    """
    for name, value in fields.items():
        if looks_secret(name):
            raise ValueError(
                f"{where} {name!r} looks like a secret, and would be sent in the body of every "
                "request: refused. The TIR key is the api_key argument (or TIR_API_KEY), sent "
                "in the Authorization header only."
            )
        if secret and _holds(value, secret):
            raise ValueError(
                f"{where} {name!r} holds the API key, and would be sent in the body of every "
                "request: refused (the key goes in the Authorization header only)."
            )
