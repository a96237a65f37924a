"""The API key hidden in every text and reply this library shows, in every form it may take.

A gateway may echo the Authorization header back in its error page, its JSON or a header;
errors, logs and reprs hide the key before anything quotes or cuts it.
"""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import quote as url_quote

__all__ = ["HIDDEN", "MIN_SECRET_CHARS", "KeyHider", "key_hider", "scrub_bytes", "scrub_secret"]


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


def scrub_bytes(content: bytes, secret: str | None) -> bytes:
    """`scrub_secret` for a raw reply, before anything decodes, parses or quotes it."""
    return key_hider(secret).raw(content)
