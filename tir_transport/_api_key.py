"""An API key as users hold it (pasted, read from a file), cleaned or refused with a reason.

Whitespace around it is stripped; a key with anything no bearer token holds, or pasted with
more than the key (quotes, `Bearer `, a `NAME=` line), is refused with an error that names
the character or the wrapping and where it is, never the key.
"""

from __future__ import annotations

import re

from pydantic import SecretStr

from ._errors import ConfigurationError

__all__ = ["clean_api_key"]


# What a bearer token may hold: printable ASCII, no space (RFC 6750's b64token is narrower still).
_KEY_CHARS = re.compile(r"[\x21-\x7e]*")
_INVISIBLE = {
    "\ufeff": "a byte-order mark (U+FEFF: the file was saved with one)",
    "\u200b": "a zero-width space (U+200B: it came with a copy and paste)",
    "\u200c": "a zero-width non-joiner (U+200C)",
    "\u200d": "a zero-width joiner (U+200D)",
    "\u2060": "a word joiner (U+2060)",
    "\u00a0": "a no-break space (U+00A0)",
}


def _key_problem(char: str) -> str:
    """What a character that cannot be in a key is, said without showing the key."""
    if char in _INVISIBLE:
        return _INVISIBLE[char]
    code = f"U+{ord(char):04X}"
    if char.isspace():
        return f"a space or line break ({code})"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"a control character ({code})"
    return f"a character that is not ASCII ({code})"


_ASSIGNMENT = re.compile(r"(export\s+)?[A-Z0-9_]*(KEY|TOKEN)\s*=")


def _wrapping(text: str) -> str | None:
    """What a key was pasted with, when it carries more than the key (TIR's JWTs never do)."""
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        return "is wrapped in quotes (as a .env or YAML file may keep them)"
    if text[:7].lower() == "bearer ":
        return "starts with 'Bearer ' (the header's word, which is added for you)"
    if _ASSIGNMENT.match(text):
        return "looks like a line of a shell or .env file (NAME=value)"
    return None


def clean_api_key(value: str | SecretStr | None, source: str = "api_key") -> SecretStr | None:
    """An API key as users hold it, made ready for the Authorization header.

    Whitespace around it (the newline of `open("key").read()`, spaces of a copy and paste) is
    stripped; an empty key is no key. A key with anything but printable ASCII left in it (a
    control character, a byte-order mark, a zero-width space, a space inside) is refused: it
    could only fail at every request, and the error there would quote the header.

    Args:
        value: the key, as given.
        source: where it came from (`api_key`, `TIR_API_KEY`), named in the error.

    Raises:
        ConfigurationError: the key holds a character no key can hold; the message names the
            character and its position, never the key.
    """
    if value is None:
        return None
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str):
        raise ConfigurationError(f"{source} must be a str, got {type(text).__name__}")
    text = text.strip()
    if not text:
        return None
    wrapped = _wrapping(text)
    if wrapped:
        raise ConfigurationError(
            f"The API key ({source}) {wrapped}: give the key alone (it is not shown here)."
        )
    if _KEY_CHARS.fullmatch(text) is None:
        position, char = next((i, c) for i, c in enumerate(text) if not "!" <= c <= "~")
        raise ConfigurationError(
            f"The API key ({source}) contains {_key_problem(char)} at position {position + 1} "
            f"of {len(text)}: no TIR token does. Check how the key was read or pasted (the "
            "key itself is not shown)."
        )
    return (
        value
        if isinstance(value, SecretStr) and text == value.get_secret_value()
        else (SecretStr(text))
    )
