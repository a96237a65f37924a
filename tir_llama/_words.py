"""Messages of the core said in the command line's words: its flags and variables, not Python."""

from __future__ import annotations

# The core speaks to Python callers (`api_key=...`); a person at a shell has flags and
# variables. Each pair rewrites one phrase of tir_transport's configuration messages.
_PHRASES = (
    (" (or pass api_key=...)", ""),
    ("(or pass project_id=...)", "(or --project-id)"),
    ("a full base_url (TIR_BASE_URL)", "a full --base-url (TIR_BASE_URL)"),
    ("pass allow_insecure_http=True", "pass --allow-insecure-http"),
    ("Give host or base_url", "Give --host or --base-url"),
    ("a model: pass model=...", "a model: pass --model"),
    ("timeout must be positive", "--timeout must be above 0 seconds"),
)


def shell_words(text: str) -> str:
    """`text` (a configuration error of the core) in one line, naming flags and variables."""
    for python, shell in _PHRASES:
        text = text.replace(python, shell)
    return " ".join(text.split())
